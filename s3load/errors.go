package s3load

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Conditions callers branch on; match them with errors.Is. Every error
// Load and LoadTo return matches one of them, or is the context's.
var (
	// ErrInvalidInput: the URI or an option is malformed; the message says
	// how to write it.
	ErrInvalidInput = errors.New("s3load: invalid input")
	// ErrNotFound: the bucket or the key does not exist.
	ErrNotFound = errors.New("s3load: object not found")
	// ErrAccessDenied: the credentials were refused or lack s3:GetObject.
	ErrAccessDenied = errors.New("s3load: access denied")
	// ErrRedirect: the server answered with a redirect (a bucket in
	// another region, or an endpoint that forwards elsewhere), which
	// s3load does not follow; the message names the region or location.
	ErrRedirect = errors.New("s3load: redirected")
	// ErrObjectChanged: the object was replaced while it was being loaded.
	ErrObjectChanged = errors.New("s3load: object changed during the load")
	// ErrChecksum: the bytes loaded do not match the expected SHA-256 or
	// the object's S3 checksum.
	ErrChecksum = errors.New("s3load: checksum mismatch")
	// ErrNotVerified: RequireChecksum is set, but there was no checksum to
	// verify the bytes with; the message says why.
	ErrNotVerified = errors.New("s3load: cannot verify")
	// ErrBadResponse: the server's answer is not what S3 sends for the
	// request: other bytes than asked for, a status or size that
	// contradicts another answer, or a refusal s3load cannot mend.
	ErrBadResponse = errors.New("s3load: bad response")
	// ErrStalled: every try of a part stalled (no bytes for StallTimeout)
	// or trickled (slower than MinSpeed).
	ErrStalled = errors.New("s3load: transfer stalled")
	// ErrUnavailable: the server or the network kept failing (connection
	// errors, 5xx, throttling, bodies cut short) for MaxAttempts tries.
	ErrUnavailable = errors.New("s3load: server unavailable")
	// ErrDestination: the destination could not be created, written or
	// read back. Load's memory check also matches
	// memfd.ErrInsufficientMemory.
	ErrDestination = errors.New("s3load: destination failed")
)

// Error describes a failed request or write for one byte range of an
// object. It wraps the cause, so the SDK's error types can be reached with
// errors.As, and matches the sentinel errors above with errors.Is.
type Error struct {
	Object  Object
	Op      string // "GetObject", "HeadObject", "create", "write", "read" or "verify"
	Start   int64  // first byte of the range
	End     int64  // last byte of the range, inclusive; -1 for no range
	Attempt int    // 1 for the first try
	Err     error

	kind error // one of the sentinels
	hint string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("s3load: %s %s", e.Op, e.Object)
	if e.End >= 0 {
		msg += fmt.Sprintf(" bytes %d-%d", e.Start, e.End)
	}
	if e.Attempt > 1 {
		msg += fmt.Sprintf(" (attempt %d)", e.Attempt)
	}
	msg += ": " + e.Err.Error()
	if e.hint != "" {
		msg += ": " + e.hint
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the condition this error stands for.
func (e *Error) Is(target error) bool { return e.kind != nil && target == e.kind }

// classify fills in the kind and the hint from an SDK error, when no kind
// was given.
func (e *Error) classify() *Error {
	if e.kind != nil {
		return e
	}
	var apiErr smithy.APIError
	code := ""
	if errors.As(e.Err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	status := 0
	var respErr *smithyhttp.ResponseError
	if errors.As(e.Err, &respErr) {
		status = respErr.HTTPStatusCode()
		if from := redirectedFrom(respErr.Response.Response); from != nil {
			e.kind, e.hint = ErrRedirect, followedHint(from, respErr.Response.Request)
			return e
		}
	}
	var signErr *v4.SigningError
	b, k := e.Object.Bucket, e.Object.Key
	switch {
	case code == "NoSuchVersion":
		e.kind, e.hint = ErrObjectChanged, "the version being loaded was deleted: load the object again"
	case code == "NoSuchBucket":
		e.kind, e.hint = ErrNotFound, fmt.Sprintf("bucket %q does not exist: check its name and the region", b)
	case code == "NoSuchKey" || status == http.StatusNotFound:
		e.kind, e.hint = ErrNotFound, fmt.Sprintf("no object %q in bucket %q: check the key (keys are case-sensitive) and the bucket", k, b)
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "ExpiredToken":
		e.kind, e.hint = ErrAccessDenied, "the credentials were rejected: check AWS_ACCESS_KEY_ID, the secret key and the session token"
	case errors.As(e.Err, &signErr):
		e.kind, e.hint = ErrAccessDenied, "no credentials to sign the request with: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or a role"
	case code == "AccessDenied" || status == http.StatusForbidden:
		e.kind, e.hint = ErrAccessDenied, fmt.Sprintf("grant s3:GetObject on arn:aws:s3:::%s/%s to this role or user", b, k)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		e.kind, e.hint = ErrObjectChanged, "the object was overwritten while loading: load it again"
	case status >= 300 && status < 400:
		e.kind, e.hint = ErrRedirect, redirectHint(status, respErr.Response.Header)
	case status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests:
		e.kind, e.hint = ErrUnavailable, "the server kept failing: try again later, or raise MaxAttempts"
	case status != 0:
		e.kind, e.hint = ErrBadResponse, fmt.Sprintf("the server refused the request with %d: check that the endpoint is S3 or an S3-compatible server", status)
	case errors.Is(e.Err, context.DeadlineExceeded) || errors.Is(e.Err, context.Canceled):
		e.kind, e.hint = ErrUnavailable, "the request timed out or was cancelled: check the network and the HTTP client's timeout"
	default:
		e.kind, e.hint = ErrUnavailable, "the server could not be reached or the connection broke: check the endpoint and the network"
	}
	return e
}

// redirectHint says what a redirect answer tells: S3 names the bucket's
// region in x-amz-bucket-region; other servers send a Location.
func redirectHint(status int, h http.Header) string {
	if region := h.Get("X-Amz-Bucket-Region"); region != "" {
		return fmt.Sprintf("the bucket is in region %s: make the S3 client with Region %q (s3load does not follow redirects)", region, region)
	}
	if loc := h.Get("Location"); loc != "" {
		return fmt.Sprintf("the server redirects to %s: s3load does not follow redirects; set the client's endpoint (BaseEndpoint) there if you trust it", loc)
	}
	return fmt.Sprintf("the server answered %d without saying where to: check the client's endpoint and region", status)
}

// redirectedFrom returns the redirect answer an HTTP client followed to
// get resp, or nil. s3load's own clients never follow one; a client the
// caller passed may.
func redirectedFrom(resp *http.Response) *http.Response {
	if resp == nil || resp.Request == nil {
		return nil
	}
	return resp.Request.Response
}

func followedHint(from *http.Response, to *http.Request) string {
	where := "another location"
	if to != nil && to.URL != nil {
		where = to.URL.Redacted()
	}
	return fmt.Sprintf("the HTTP client followed a %d redirect to %s, whose bytes may be another object's: fix the endpoint or region, or give the client a CheckRedirect that returns http.ErrUseLastResponse",
		from.StatusCode, where)
}

// isInvalidRange reports a 416 from a ranged GET.
func isInvalidRange(err error) bool {
	var respErr *smithyhttp.ResponseError
	return errors.As(err, &respErr) && respErr.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable
}

// invalidError is a malformed URI or option.
type invalidError struct{ error }

func (invalidError) Is(target error) bool { return target == ErrInvalidInput }
func (e invalidError) Unwrap() error      { return e.error }

func invalid(format string, args ...any) error { return invalidError{fmt.Errorf(format, args...)} }
