package s3load

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Conditions callers branch on; match them with errors.Is.
var (
	// ErrNotFound: the bucket or the key does not exist.
	ErrNotFound = errors.New("s3load: object not found")
	// ErrAccessDenied: the credentials were refused or lack s3:GetObject.
	ErrAccessDenied = errors.New("s3load: access denied")
	// ErrObjectChanged: the object was replaced while it was being loaded.
	ErrObjectChanged = errors.New("s3load: object changed during the load")
	// ErrChecksum: the bytes loaded do not match the expected SHA-256 or
	// the object's S3 checksum.
	ErrChecksum = errors.New("s3load: checksum mismatch")
	// ErrBadResponse: the server sent bytes other than those asked for.
	ErrBadResponse = errors.New("s3load: bad response")
)

// Error describes a failed request or write for one byte range of an
// object. It wraps the cause, so the SDK's error types can be reached with
// errors.As, and matches the sentinel errors above with errors.Is.
type Error struct {
	Object  Object
	Op      string // "GetObject", "HeadObject" or "write"
	Start   int64  // first byte of the range
	End     int64  // last byte of the range, inclusive; -1 for no range
	Attempt int    // 1 for the first try
	Err     error

	kind error // one of the sentinels, or nil
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

// classify fills in the kind and the hint from an SDK error.
func (e *Error) classify() *Error {
	var apiErr smithy.APIError
	code := ""
	if errors.As(e.Err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	status := 0
	var respErr *smithyhttp.ResponseError
	if errors.As(e.Err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
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
	case code == "AccessDenied" || status == http.StatusForbidden:
		e.kind, e.hint = ErrAccessDenied, fmt.Sprintf("grant s3:GetObject on arn:aws:s3:::%s/%s to this role or user", b, k)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		e.kind, e.hint = ErrObjectChanged, "the object was overwritten while loading: load it again"
	}
	return e
}

// isInvalidRange reports a 416 from a ranged GET: the object is empty.
func isInvalidRange(err error) bool {
	var respErr *smithyhttp.ResponseError
	return errors.As(err, &respErr) && respErr.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable
}
