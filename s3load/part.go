package s3load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// part is one response being read: body holds bytes start..end (inclusive)
// of the object.
type part struct {
	start, end int64
	body       io.ReadCloser
	attempt    int
	sum        *partSum // the CRC of the part's bytes written so far

	size          int64 // the whole object's, from Content-Range
	unsatisfiable bool  // the first GET was answered 416: maybe an empty object
	etag          string
	versionID     string
	cancel        context.CancelCauseFunc // ends the request behind body
}

// close releases a first part that will not be read.
func (p *part) close() {
	if p.body != nil {
		p.body.Close()
		p.cancel(nil)
	}
}

// errStalled is the cause given to a request cut for delivering too little.
var errStalled = errors.New("too few bytes received")

// fetch puts bytes p.start..p.end, part i, in place. A part that comes
// with a body (the first one) is read from it; otherwise it is requested.
// A failed request or body is retried from the first byte not yet written.
func (d *download) fetch(ctx context.Context, i int64, p *part) error {
	var sum partSum
	start, next, end := p.start, p.start, p.end
	err := d.retry(ctx, func(attempt int) error {
		n, err := d.try(ctx, p, &sum, next, end, attempt)
		p, next = nil, next+n
		return err
	})
	if err == nil {
		if d.opts.OnPart != nil {
			d.opts.OnPart(d.w, start, end+1)
		}
		d.order.done(i, sum)
		d.askOrder()
	}
	return err
}

// getFirst requests the first part, retrying as fetch does. Its body is
// left to read once the destination is open. A 416 is returned as an
// unsatisfiable part without a body, for HeadObject to confirm that the
// object is empty.
func (d *download) getFirst(ctx context.Context) (*part, error) {
	var first *part
	end := d.opts.PartSize - 1
	err := d.retry(ctx, func(attempt int) error {
		rctx, cancel := context.WithCancelCause(ctx)
		w := d.watch(cancel)
		p, err := d.get(rctx, 0, end, attempt)
		w.stop()
		if err != nil {
			cancel(nil)
			if isInvalidRange(err) {
				first = &part{unsatisfiable: true}
				return nil
			}
			return d.explain(w, err, 0, end, attempt)
		}
		p.cancel, first = cancel, p
		return nil
	})
	return first, err
}

// retry calls try until it succeeds, fails in a way another try cannot
// mend, or has been called MaxAttempts times, with a backoff between
// calls.
func (d *download) retry(ctx context.Context, try func(attempt int) error) error {
	for attempt := 1; ; attempt++ {
		err := try(attempt)
		if err == nil || ctx.Err() != nil || !retryable(err) || attempt >= d.opts.MaxAttempts {
			return err
		}
		d.retries.Add(1)
		d.log.Debug("s3load: retrying", "attempt", attempt+1, "err", err)
		if err := sleep(ctx, backoff(d.opts.RetryBackoff, attempt)); err != nil {
			return err
		}
	}
}

// try makes one attempt at bytes next..end, reading p's body if there is
// one, and returns how many bytes it put in place.
func (d *download) try(ctx context.Context, p *part, sum *partSum, next, end int64, attempt int) (int64, error) {
	var w *stallWatch
	if p == nil || p.body == nil {
		rctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		w = d.watch(cancel)
		defer w.stop()
		var err error
		if p, err = d.get(rctx, next, end, attempt); err != nil {
			return 0, d.explain(w, err, next, end, attempt)
		}
		// The body waits in the connection's buffers while the
		// destination is being opened (see run).
		select {
		case <-d.opened:
		case <-ctx.Done():
			p.body.Close()
			return 0, ctx.Err()
		}
		w.restart() // the window for the body starts with it
	} else {
		defer p.cancel(nil)
		w = d.watch(p.cancel)
		defer w.stop()
	}
	p.sum = sum
	p.body = &stallBody{ReadCloser: p.body, w: w}
	n, err := d.copyPart(ctx, p)
	if err != nil {
		err = d.explain(w, err, next, end, attempt)
	}
	return n, err
}

// stallWatch cancels a request with errStalled when a window of
// StallTimeout passes with fewer than min bytes arriving: none, or too few
// for MinSpeed.
type stallWatch struct {
	t      *time.Timer
	window time.Duration
	min    int64
	got    atomic.Int64 // bytes in the current window
	fired  atomic.Bool
	lastN  atomic.Int64 // bytes in the window that fired
	mu     sync.Mutex
	done   bool
}

func (d *download) watch(cancel context.CancelCauseFunc) *stallWatch {
	w := &stallWatch{window: d.opts.StallTimeout, min: 1}
	if d.opts.MinSpeed > 0 {
		w.min = int64(max(min(float64(d.opts.MinSpeed)*w.window.Seconds(), 1<<62), 1))
	}
	w.t = time.AfterFunc(w.window, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.done {
			return
		}
		if n := w.got.Swap(0); n < w.min {
			w.lastN.Store(n)
			w.fired.Store(true)
			cancel(errStalled)
			return
		}
		w.t.Reset(w.window)
	})
	return w
}

// restart begins a new window.
func (w *stallWatch) restart() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got.Store(0)
	w.t.Reset(w.window)
}

func (w *stallWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	w.t.Stop()
}

// stallBody counts the bytes that arrive.
type stallBody struct {
	io.ReadCloser
	w *stallWatch
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.w.got.Add(int64(n))
	return n, err
}

// explain replaces the error of a request cut by w with a stall error.
func (d *download) explain(w *stallWatch, err error, start, end int64, attempt int) error {
	if !w.fired.Load() {
		return err
	}
	cause := fmt.Errorf("%w: no bytes for StallTimeout (%v): the connection stalled", errStalled, w.window)
	if n := w.lastN.Load(); n > 0 {
		cause = fmt.Errorf("%w: %d bytes in StallTimeout (%v), fewer than MinSpeed (%d bytes/s) asks for: the connection trickles",
			errStalled, n, w.window, d.opts.MinSpeed)
	}
	return &Error{Object: d.obj, Op: "GetObject", Start: start, End: end, Attempt: attempt, Err: cause, kind: ErrStalled,
		hint: "retried MaxAttempts times; check the network, or raise StallTimeout or lower MinSpeed for a slow link"}
}

// retryable reports whether another try may succeed: not for a missing
// object, refused access, a changed object, a failed write, or a request
// the server judged bad.
func retryable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Op == "write" {
		return false
	}
	switch e.kind {
	case ErrDestination, ErrNotFound, ErrAccessDenied, ErrObjectChanged, ErrRedirect:
		return false
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		s := respErr.HTTPStatusCode()
		return s >= 500 || s == http.StatusRequestTimeout || s == http.StatusTooManyRequests
	}
	return true
}

// backoff returns a random wait in [0, base·2^(attempt-1)], at most 5 s.
func backoff(base time.Duration, attempt int) time.Duration {
	limit := min(min(base, 5*time.Second)<<min(attempt-1, 20), 5*time.Second)
	return rand.N(limit + 1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *download) clientOptions() []func(*s3.Options) {
	return append([]func(*s3.Options){func(o *s3.Options) {
		// Ranged GETs carry no whole-object checksum to validate.
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.DisableLogOutputChecksumValidationSkipped = true
		o.HTTPClient = tuneHTTPClient(o.HTTPClient, d.opts.Concurrency)
	}}, d.opts.ClientOptions...)
}

// get requests bytes start..end (inclusive), pinned to the version of the
// first response, and checks that the response holds exactly those.
func (d *download) get(ctx context.Context, start, end int64, attempt int) (*part, error) {
	in := &s3.GetObjectInput{
		Bucket: &d.obj.Bucket,
		Key:    &d.obj.Key,
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", start, end)),
	}
	if d.etag != "" {
		in.IfMatch = &d.etag
	}
	if d.versionID != "" {
		in.VersionId = &d.versionID
	}
	fail := func(err error, kind error) *Error {
		return (&Error{Object: d.obj, Op: "GetObject", Start: start, End: end, Attempt: attempt, Err: err, kind: kind}).classify()
	}
	out, err := d.client.GetObject(ctx, in, d.clientOptions()...)
	if err != nil {
		if d.sized && isInvalidRange(err) {
			e := fail(fmt.Errorf("%w: the object is shorter than the %d bytes it had", err, d.size), ErrObjectChanged)
			e.hint = "the object was replaced while loading: load it again, or set RestartOnChange"
			return nil, e
		}
		return nil, fail(err, nil)
	}
	resp := rawResponse(out)
	if from := redirectedFrom(resp); from != nil {
		out.Body.Close()
		return nil, &Error{Object: d.obj, Op: "GetObject", Start: start, End: end, Attempt: attempt, kind: ErrRedirect,
			Err: fmt.Errorf("answered %d", from.StatusCode), hint: followedHint(from, resp.Request)}
	}
	cr := aws.ToString(out.ContentRange)
	var gotStart, gotEnd, size int64
	kind := ErrBadResponse
	switch status := statusOf(resp); {
	case status == http.StatusOK && cr == "" && !d.sized:
		gotStart, gotEnd, size, err = wholeObject(out.ContentLength, end)
	case status != 0 && status != http.StatusPartialContent:
		err = fmt.Errorf("answered %d to a ranged GET, want 206 Partial Content", status)
	default:
		gotStart, gotEnd, size, err = parseContentRange(cr)
	}
	switch {
	case err != nil:
	case d.sized && size != d.size:
		err, kind = fmt.Errorf("object size changed from %d to %d bytes", d.size, size), ErrObjectChanged
	case d.etag != "" && out.ETag != nil && *out.ETag != d.etag:
		err, kind = fmt.Errorf("ETag changed from %s to %s", d.etag, *out.ETag), ErrObjectChanged
	case d.versionID != "" && out.VersionId != nil && *out.VersionId != d.versionID:
		err, kind = fmt.Errorf("version changed from %s to %s", d.versionID, *out.VersionId), ErrObjectChanged
	case gotStart != start || gotEnd != min(end, size-1):
		err = fmt.Errorf("asked for bytes %d-%d, server sent %s", start, end, cr)
	case out.ContentLength != nil && *out.ContentLength != gotEnd-gotStart+1:
		err = fmt.Errorf("Content-Length %d does not match Content-Range %s", *out.ContentLength, cr)
	}
	if err != nil {
		out.Body.Close()
		e := fail(err, kind)
		e.hint = "the server, or a proxy in front of it, does not answer ranged GETs as S3 does: check the endpoint"
		if kind == ErrObjectChanged {
			e.hint = "the object was replaced while loading: load it again, or set RestartOnChange"
		}
		return nil, e
	}
	return &part{
		start: gotStart, end: gotEnd, body: out.Body, attempt: attempt,
		size: size, etag: aws.ToString(out.ETag), versionID: aws.ToString(out.VersionId),
	}, nil
}

// wholeObject takes a 200 without Content-Range to the first GET as the
// whole object, if it fits in the range asked for: some servers answer an
// empty or small object so.
func wholeObject(contentLength *int64, end int64) (start, last, size int64, err error) {
	switch {
	case contentLength == nil:
		return 0, 0, 0, fmt.Errorf("answered 200 without Content-Range or Content-Length: the server ignored the Range header")
	case *contentLength < 0 || *contentLength > end+1:
		return 0, 0, 0, fmt.Errorf("answered 200 with the whole object (%d bytes) instead of the range: the server ignored the Range header; use one that supports ranged GETs", *contentLength)
	}
	return 0, *contentLength - 1, *contentLength, nil
}

// rawResponse returns the HTTP response behind out, or nil for a Client
// that gives none.
func rawResponse(out *s3.GetObjectOutput) *http.Response {
	if r, ok := awsmiddleware.GetRawResponse(out.ResultMetadata).(*smithyhttp.Response); ok && r != nil {
		return r.Response
	}
	return nil
}

// statusOf returns resp's status, 0 if unknown.
func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// parseContentRange parses "bytes START-END/SIZE".
func parseContentRange(s string) (start, end, size int64, err error) {
	spec, ok := strings.CutPrefix(s, "bytes ")
	rng, total, ok2 := strings.Cut(spec, "/")
	first, last, ok3 := strings.Cut(rng, "-")
	if !ok || !ok2 || !ok3 {
		return 0, 0, 0, fmt.Errorf("response has Content-Range %q, want bytes START-END/SIZE: the server ignored the Range header", s)
	}
	start, err1 := strconv.ParseInt(first, 10, 64)
	end, err2 := strconv.ParseInt(last, 10, 64)
	size, err3 := strconv.ParseInt(total, 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil || start < 0 || end < start || size <= end {
		return 0, 0, 0, fmt.Errorf("response has malformed Content-Range %q", s)
	}
	return start, end, size, nil
}

// written accounts for bytes b, just written after the bytes of part p
// already in place.
func (d *download) written(p *part, b []byte) {
	if d.crc != nil {
		p.sum.crc = d.crc.update(p.sum.crc, b)
		p.sum.n += int64(len(b))
	}
	d.progress(int64(len(b)))
}
