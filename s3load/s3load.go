// Package s3load downloads an S3 object into memory with concurrent ranged
// GETs, each part streamed to its offset through a small buffer, so that
// loading a 1 GiB model takes a few MiB of extra memory.
//
// [Loader.Load] puts the object in a [memfd.File], ready to hand to a
// library that opens paths; [Loader.LoadTo] writes into any [io.WriterAt].
package s3load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"github.com/memload/memload/memfd"
)

// Client is the part of the S3 API a Loader uses; *s3.Client satisfies it.
type Client interface {
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
}

// Default option values.
const (
	DefaultPartSize    = 8 << 20
	DefaultConcurrency = 16
)

// bufferSize is how much of a part body is read before it is written: the
// extra memory a load takes is Concurrency × bufferSize.
const bufferSize = 1 << 20

// Options configure a Loader. Zero values take the defaults.
type Options struct {
	// PartSize is the size of each ranged GET (default DefaultPartSize).
	PartSize int64
	// Concurrency is how many parts are downloaded at once (default
	// DefaultConcurrency).
	Concurrency int
	// Logger receives a debug line per part and an info line per load.
	// Default: discard.
	Logger *slog.Logger
	// Progress, if set, is called after each write with the bytes loaded
	// so far and the object size. Calls are serialised.
	Progress func(done, total int64)
	// MemfdOptions are passed to memfd.New by Load.
	MemfdOptions []func(*memfd.Options)
	// ClientOptions are applied to every S3 request, after the loader's
	// own (which switch off response checksum validation for ranged GETs,
	// and the SDK's log line about skipping it).
	ClientOptions []func(*s3.Options)
}

// Loader loads S3 objects into memory. It is safe for concurrent use.
type Loader struct {
	client  Client
	options Options
}

// New returns a Loader that uses client, configured by optFns.
func New(client Client, optFns ...func(*Options)) *Loader {
	l := &Loader{client: client}
	for _, fn := range optFns {
		fn(&l.options)
	}
	return l
}

// Stats describe a finished load.
type Stats struct {
	Object      Object
	Size        int64         // bytes loaded
	Parts       int           // ranged GETs made
	PartSize    int64         // bytes per part, the last may be shorter
	Concurrency int           // parts in flight at once, at most
	FirstByte   time.Duration // from the call to the first response
	Elapsed     time.Duration // from the call to the last byte written
}

// Throughput returns bytes per second over the whole load.
func (s Stats) Throughput() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Size) / s.Elapsed.Seconds()
}

// String summarises the load in one line.
func (s Stats) String() string {
	return fmt.Sprintf("%s: %d bytes in %v (%.1f MiB/s), %d parts of %d MiB, %d at once, first byte after %v",
		s.Object, s.Size, s.Elapsed.Round(time.Millisecond), s.Throughput()/(1<<20), s.Parts, s.PartSize>>20,
		s.Concurrency, s.FirstByte.Round(time.Millisecond))
}

// Load downloads the object at uri (s3://bucket/key) into a new, sealed
// memfd.File named after the key. An empty object gives an empty file. On
// error no file is left open; if ctx ends first, the error is ctx's.
func (l *Loader) Load(ctx context.Context, uri string, optFns ...func(*Options)) (*memfd.File, Stats, error) {
	var f *memfd.File
	o := l.optionsFor(optFns)
	stats, err := l.load(ctx, uri, o, func(obj Object, size int64) (io.WriterAt, error) {
		var err error
		f, err = memfd.New(path.Base(obj.Key), size, o.MemfdOptions...)
		return f, err
	})
	if err == nil {
		err = f.Seal()
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, stats, err
	}
	return f, stats, nil
}

// LoadTo downloads the object at uri (s3://bucket/key) into w, at the same
// offsets as in the object; WriteAt is called from several goroutines at
// once. On error, w may hold part of the object.
func (l *Loader) LoadTo(ctx context.Context, uri string, w io.WriterAt, optFns ...func(*Options)) (Stats, error) {
	return l.load(ctx, uri, l.optionsFor(optFns), func(Object, int64) (io.WriterAt, error) { return w, nil })
}

func (l *Loader) optionsFor(optFns []func(*Options)) Options {
	o := l.options
	for _, fn := range optFns {
		fn(&o)
	}
	if o.PartSize <= 0 {
		o.PartSize = DefaultPartSize
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// load gets the first part, which also tells the object's size and ETag,
// opens the destination for that size, then fetches the other parts
// concurrently, each pinned to the first part's ETag.
func (l *Loader) load(ctx context.Context, uri string, o Options, open func(Object, int64) (io.WriterAt, error)) (Stats, error) {
	start := time.Now()
	obj, err := ParseURI(uri)
	if err != nil {
		return Stats{}, err
	}
	d := &download{client: l.client, obj: obj, opts: o, log: o.Logger.With("object", obj.String()), start: start}
	stats := Stats{Object: obj, PartSize: o.PartSize, Concurrency: o.Concurrency}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	first, err := d.get(ctx, 0, o.PartSize-1, 1)
	stats.FirstByte = time.Since(start)
	if err != nil && isInvalidRange(err) {
		return d.loadEmpty(ctx, stats, open)
	}
	if err != nil {
		return stats, d.fail(ctx, err)
	}
	d.size, d.etag = first.size, first.etag
	d.w, err = open(obj, d.size)
	if err != nil {
		first.body.Close()
		return stats, fmt.Errorf("s3load: %s: %w", obj, err)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Concurrency)
	g.Go(func() error { return d.fetch(gctx, first) })
	stats.Parts = 1
	for off := o.PartSize; off < d.size && gctx.Err() == nil; off += o.PartSize {
		stats.Parts++
		g.Go(func() error { return d.fetch(gctx, &part{start: off, end: min(off+o.PartSize, d.size) - 1}) })
	}
	if err := g.Wait(); err != nil {
		return stats, d.fail(ctx, err)
	}
	stats.Size = d.size
	stats.Elapsed = time.Since(start)
	d.log.Info("s3load: loaded", "bytes", stats.Size, "parts", stats.Parts, "elapsed", stats.Elapsed)
	return stats, nil
}

// fail returns ctx's error if ctx ended, which then caused err.
func (d *download) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// loadEmpty confirms with HeadObject that a 416 meant an empty object.
func (d *download) loadEmpty(ctx context.Context, stats Stats, open func(Object, int64) (io.WriterAt, error)) (Stats, error) {
	head, err := d.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.obj.Bucket, Key: &d.obj.Key}, d.clientOptions()...)
	if err != nil {
		return stats, d.fail(ctx, (&Error{Object: d.obj, Op: "HeadObject", End: -1, Attempt: 1, Err: err}).classify())
	}
	if n := aws.ToInt64(head.ContentLength); n != 0 {
		return stats, &Error{Object: d.obj, Op: "GetObject", Start: 0, End: d.opts.PartSize - 1, Attempt: 1,
			kind: ErrBadResponse, Err: fmt.Errorf("range not satisfiable, but HeadObject says the object has %d bytes", n)}
	}
	if _, err := open(d.obj, 0); err != nil {
		return stats, fmt.Errorf("s3load: %s: %w", d.obj, err)
	}
	stats.Elapsed = time.Since(d.start)
	return stats, nil
}

// download is the state one load shares between its parts.
type download struct {
	client Client
	obj    Object
	opts   Options
	log    *slog.Logger
	start  time.Time

	size int64
	etag string
	w    io.WriterAt

	done       atomic.Int64
	progressMu sync.Mutex
	bufs       sync.Pool
}

// part is a response being read: body holds bytes start..end of the object.
type part struct {
	start, end int64
	size       int64 // the whole object's
	etag       string
	body       io.ReadCloser
	attempt    int
}

func (d *download) clientOptions() []func(*s3.Options) {
	return append([]func(*s3.Options){func(o *s3.Options) {
		// Ranged GETs carry no whole-object checksum to validate.
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.DisableLogOutputChecksumValidationSkipped = true
	}}, d.opts.ClientOptions...)
}

// get requests bytes start..end (inclusive) and checks that the response
// holds exactly those.
func (d *download) get(ctx context.Context, start, end int64, attempt int) (*part, error) {
	in := &s3.GetObjectInput{
		Bucket: &d.obj.Bucket,
		Key:    &d.obj.Key,
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", start, end)),
	}
	if d.etag != "" {
		in.IfMatch = &d.etag
	}
	fail := func(err error, kind error) error {
		return (&Error{Object: d.obj, Op: "GetObject", Start: start, End: end, Attempt: attempt, Err: err, kind: kind}).classify()
	}
	out, err := d.client.GetObject(ctx, in, d.clientOptions()...)
	if err != nil {
		return nil, fail(err, nil)
	}
	gotStart, gotEnd, size, err := parseContentRange(aws.ToString(out.ContentRange))
	if err == nil && d.size > 0 && size != d.size {
		err = fmt.Errorf("object size changed from %d to %d bytes", d.size, size)
		out.Body.Close()
		return nil, fail(err, ErrObjectChanged)
	}
	if err == nil && (gotStart != start || gotEnd != min(end, size-1)) {
		err = fmt.Errorf("asked for bytes %d-%d, server sent %s", start, end, aws.ToString(out.ContentRange))
	}
	if err == nil && out.ContentLength != nil && *out.ContentLength != gotEnd-gotStart+1 {
		err = fmt.Errorf("Content-Length %d does not match Content-Range %s", *out.ContentLength, aws.ToString(out.ContentRange))
	}
	if err != nil {
		out.Body.Close()
		return nil, fail(err, ErrBadResponse)
	}
	d.log.Debug("s3load: part", "start", start, "end", gotEnd, "attempt", attempt)
	return &part{start: gotStart, end: gotEnd, size: size, etag: aws.ToString(out.ETag), body: out.Body, attempt: attempt}, nil
}

func (d *download) progress(n int64) {
	d.done.Add(n)
	if d.opts.Progress == nil {
		return
	}
	d.progressMu.Lock()
	defer d.progressMu.Unlock()
	d.opts.Progress(d.done.Load(), d.size)
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
