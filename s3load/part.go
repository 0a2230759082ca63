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
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// part is one response being read: body holds bytes start..end (inclusive)
// of the object.
type part struct {
	start, end int64
	body       io.ReadCloser
	attempt    int

	size      int64 // the whole object's, from Content-Range
	etag      string
	versionID string
	cancel    context.CancelCauseFunc // ends the request behind body
}

// errStalled is the cause given to a request cut for delivering nothing.
var errStalled = errors.New("no bytes received for too long")

// fetch puts bytes p.start..p.end in place. A part that comes with a body
// (the first one) is read from it; otherwise it is requested. A failed
// request or body is retried from the first byte not yet written.
func (d *download) fetch(ctx context.Context, p *part) error {
	start, next, end := p.start, p.start, p.end
	err := d.retry(ctx, func(attempt int) error {
		n, err := d.try(ctx, p, next, end, attempt)
		p, next = nil, next+n
		return err
	})
	if err == nil {
		d.partDone(start)
	}
	return err
}

// getFirst requests the first part, retrying as fetch does. Its body is
// left to read once the destination is open.
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
func (d *download) try(ctx context.Context, p *part, next, end int64, attempt int) (int64, error) {
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
	} else {
		defer p.cancel(nil)
		w = d.watch(p.cancel)
		defer w.stop()
	}
	p.body = &stallBody{ReadCloser: p.body, w: w}
	n, err := d.copyPart(ctx, p)
	if err != nil {
		err = d.explain(w, err, next, end, attempt)
	}
	return n, err
}

// stallWatch cancels a request with errStalled when StallTimeout passes
// without bytes arriving.
type stallWatch struct {
	t     *time.Timer
	after time.Duration
	fired atomic.Bool
}

func (d *download) watch(cancel context.CancelCauseFunc) *stallWatch {
	w := &stallWatch{after: d.opts.StallTimeout}
	w.t = time.AfterFunc(w.after, func() {
		w.fired.Store(true)
		cancel(errStalled)
	})
	return w
}

func (w *stallWatch) stop() { w.t.Stop() }

// stallBody restarts the stall timer whenever bytes arrive.
type stallBody struct {
	io.ReadCloser
	w *stallWatch
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.w.t.Reset(b.w.after)
	}
	return n, err
}

// explain replaces the error of a request cut by w with a stall error.
func (d *download) explain(w *stallWatch, err error, start, end int64, attempt int) error {
	if !w.fired.Load() {
		return err
	}
	return &Error{Object: d.obj, Op: "GetObject", Start: start, End: end, Attempt: attempt,
		Err: fmt.Errorf("%w (%v): the connection stalled", errStalled, w.after)}
}

// retryable reports whether another try may succeed: not for a missing
// object, refused access, a changed object, a failed write, or a request
// the server judged bad.
func retryable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Op == "write" || e.kind == ErrNotFound || e.kind == ErrAccessDenied || e.kind == ErrObjectChanged {
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
	limit := min(base<<min(attempt-1, 20), 5*time.Second)
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
	fail := func(err error, kind error) error {
		return (&Error{Object: d.obj, Op: "GetObject", Start: start, End: end, Attempt: attempt, Err: err, kind: kind}).classify()
	}
	out, err := d.client.GetObject(ctx, in, d.clientOptions()...)
	if err != nil {
		return nil, fail(err, nil)
	}
	cr := aws.ToString(out.ContentRange)
	gotStart, gotEnd, size, err := parseContentRange(cr)
	kind := ErrBadResponse
	switch {
	case err != nil:
	case d.size > 0 && size != d.size:
		err, kind = fmt.Errorf("object size changed from %d to %d bytes", d.size, size), ErrObjectChanged
	case d.etag != "" && out.ETag != nil && *out.ETag != d.etag:
		err, kind = fmt.Errorf("ETag changed from %s to %s", d.etag, *out.ETag), ErrObjectChanged
	case gotStart != start || gotEnd != min(end, size-1):
		err = fmt.Errorf("asked for bytes %d-%d, server sent %s", start, end, cr)
	case out.ContentLength != nil && *out.ContentLength != gotEnd-gotStart+1:
		err = fmt.Errorf("Content-Length %d does not match Content-Range %s", *out.ContentLength, cr)
	}
	if err != nil {
		out.Body.Close()
		return nil, fail(err, kind)
	}
	return &part{
		start: gotStart, end: gotEnd, body: out.Body, attempt: attempt,
		size: size, etag: aws.ToString(out.ETag), versionID: aws.ToString(out.VersionId),
	}, nil
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
		s := &d.sums[p.start/d.opts.PartSize]
		s.crc = d.crc.update(s.crc, b)
		s.n += int64(len(b))
	}
	d.progress(int64(len(b)))
}
