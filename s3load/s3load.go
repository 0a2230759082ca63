// Package s3load downloads an S3 object into memory with concurrent ranged
// GETs, each part streamed to its offset through a small buffer, so that
// loading a 1 GiB model takes a few MiB of extra memory.
//
// [Loader.Load] puts the object in a [memfd.File], ready to hand to a
// library that opens paths; [Loader.LoadTo] writes into any [io.WriterAt].
//
// A load trusts no answer it can check. Every ranged GET must come back
// 206 with exactly the bytes asked for, of the same size and ETag as the
// first (a 200 is taken only for a whole object that fits in the first
// part); HeadObject's size must agree with Content-Range's. Redirects are
// not followed: the SDK's HTTP client, which would follow a 307, is used
// through a copy that follows none, and an answer that a caller's own HTTP
// client reached through a redirect is refused with [ErrRedirect]. The
// bytes are verified with the object's S3 full-object checksum when
// HeadObject gives one for the version loaded, and with Options.SHA256
// when set. When the S3 checksum cannot be checked, [Stats].Unverified
// says why (and [Stats].Verified is "" unless SHA256 was checked);
// Options.RequireChecksum makes a load with neither fail with
// [ErrNotVerified] before anything is downloaded. A request that brings no bytes for StallTimeout,
// or fewer than MinSpeed bytes a second over a StallTimeout window, is cut
// and retried from the last byte written, up to MaxAttempts tries.
//
// Every error matches one of [ErrInvalidInput], [ErrNotFound],
// [ErrAccessDenied], [ErrRedirect], [ErrObjectChanged], [ErrChecksum],
// [ErrNotVerified], [ErrBadResponse], [ErrStalled], [ErrUnavailable] and
// [ErrDestination] with errors.Is, and says what to do; or it is the
// context's error, if the context ended.
package s3load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"sync"
	"sync/atomic"
	"time"

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
	DefaultPartSize     = 16 << 20
	DefaultConcurrency  = 16
	DefaultMaxAttempts  = 5
	DefaultStallTimeout = 5 * time.Second
	DefaultMinSpeed     = 8 << 10 // bytes per second
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
	// Logger receives a debug line per retry, a warning when the load
	// starts over or cannot verify a checksum, and an info line per load.
	// Default: discard.
	Logger *slog.Logger
	// Progress, if set, is called after each write with the bytes loaded
	// so far and the object size. Calls are serialised.
	Progress func(done, total int64)
	// OnPrefix, if set, is called each time the run of bytes in place from
	// the start of the object grows: bytes [0, n) of w, the destination,
	// are written, as the first part arrives, then part by part. A
	// consumer can start on the head of the object while the rest arrives
	// (llama.cpp on a model's header); nothing is verified until the load
	// returns. Calls come in order, n growing to the object's size, never
	// two at once, from the goroutine that finished a part (or is writing
	// the first), with the load's record of parts locked: return quickly
	// and leave longer work to another goroutine. A load that starts over
	// (RestartOnChange) calls it again from the start, with its new
	// destination. An empty object gets no call. llm.EarlyLoad's Written
	// is such a consumer: llama.cpp loads a model as it downloads.
	OnPrefix func(w io.WriterAt, n int64)
	// OnPart, if set, is called each time a part is in place: bytes
	// [start, end) of w, the destination, are written, wherever they lie
	// (see Order). A consumer that reads the object out of order waits on
	// it rather than on OnPrefix; llm.EarlyLoad's WrittenRange is one.
	// Calls come from the goroutines that finished the parts, several at
	// once, before OnPrefix tells of the same bytes (except the first
	// part's, which OnPrefix tells of as they arrive): return quickly.
	OnPart func(w io.WriterAt, start, end int64)
	// OnRelease, if set, is called each time the run of bytes from the
	// start of the object that the load is done with grows: bytes [0, n)
	// of w are in place and the load will not read them again, so a
	// consumer may change them (llm.EarlyLoad's Verified gives back the
	// memfd's pages of weights llama.cpp repacked). With SHA256 that is
	// once they are hashed, behind OnPrefix; without, once they are in
	// place, a moment after OnPrefix tells of them (two growths may come
	// as one call). Calls come in order, n growing to the
	// object's size, never two at once, from a goroutine of the load's
	// own; the memfd's background reservation (Load) waits for a call to
	// return, so that it never takes back pages the call gave back. A
	// load that starts over calls it again from the start, with its new
	// destination. An empty object gets no call.
	OnRelease func(w io.WriterAt, n int64)
	// Order, if set, lets a consumer that starts on the head of the
	// object (see OnPrefix) choose which bytes come next, such as the
	// tensors llama.cpp loads first (llm.ReadOrder). It is called when
	// the run of bytes in place from the start has grown, with bytes
	// [0, n) of the destination to read (reads past n end with io.EOF)
	// and the object's size, until it returns ranges: [start, end) byte
	// ranges wanted first, most wanted first. The parts that hold them
	// and have not started are started next, in that order, then the rest
	// from the start. Calls come from the goroutine that finished a part,
	// never two at once, outside the load's locks: the other parts go on
	// meanwhile, and no part waits for an order. OnPrefix still tells
	// only the run of bytes in place from the start. Order is not called
	// if the destination is not an io.ReaderAt (a memfd is).
	Order func(prefix io.ReaderAt, n, size int64) [][2]int64
	// MaxAttempts bounds the tries of each part, the first included
	// (default DefaultMaxAttempts). A part whose body breaks is resumed
	// from the last byte written. Request-level errors are first retried
	// by the client's own retryer.
	MaxAttempts int
	// RetryBackoff is the first retry's longest wait; each retry doubles
	// it, up to 5 s, and waits a random part of it (default 100 ms).
	RetryBackoff time.Duration
	// StallTimeout cuts and retries a request that delivers no bytes in a
	// window this long, so after one to two StallTimeouts of silence
	// (default DefaultStallTimeout).
	StallTimeout time.Duration
	// MinSpeed, in bytes per second, cuts and retries a request that
	// brings fewer than MinSpeed × StallTimeout bytes in a StallTimeout
	// window, as a stall (default DefaultMinSpeed; negative: only a
	// window without a byte counts). On a link slower than Concurrency ×
	// MinSpeed, lower one of them.
	MinSpeed int64
	// SHA256 is the object's expected SHA-256 in hex. When set, each part
	// is hashed as soon as it and those before it are in place, and a
	// mismatch fails the load with ErrChecksum. LoadTo then needs a
	// destination that is an io.ReaderAt.
	SHA256 string
	// NoChecksum skips verifying the object's S3 full-object checksum
	// (CRC64NVME or CRC32C), which is otherwise asked for with HeadObject
	// and checked against CRCs computed while streaming. It also skips
	// comparing HeadObject's size with the GETs'.
	NoChecksum bool
	// RequireChecksum fails the load with ErrNotVerified, before the
	// download, when neither SHA256 is set nor the object's S3
	// full-object checksum can be had (HeadObject failed, the object has
	// none or a composite one, or NoChecksum is set).
	RequireChecksum bool
	// RestartOnChange makes a load whose object is replaced midway start
	// over once, with the new version, instead of failing with
	// ErrObjectChanged.
	RestartOnChange bool
	// MemfdOptions are passed to memfd.New by Load. Load reserves the
	// file's memory in the background while the parts are written rather
	// than in memfd.New, so that the first bytes are written at once;
	// memfd.Options.NoReserve turns the reservation off.
	MemfdOptions []func(*memfd.Options)
	// NoSeal makes Load leave the verified file unsealed, for a consumer
	// that changes it before it is sealed: llm.LoadFile gives back the
	// pages of weights llama.cpp repacked (memfd.File.PunchHole), which the
	// kernel refuses once the file is sealed. Seal it afterwards if others
	// are to rely on its contents.
	NoSeal bool
	// ClientOptions are applied to every S3 request, after the loader's
	// own: those switch off the SDK's response checksum validation (ranged
	// GETs carry no checksum to validate) and its log line about that, and
	// replace the SDK's default HTTP client with a copy tuned for many
	// connections to one host (see BENCHMARKS.md) that follows no
	// redirect. An HTTP client of the caller's own is used as it is; give
	// it a CheckRedirect that returns http.ErrUseLastResponse, or a load
	// it redirects fails with ErrRedirect once the other server answered.
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
	Retries     int           // part requests retried after a failure
	Restarted   bool          // the object changed and the load started over
	Verified    string        // checks passed: "CRC64NVME", "CRC32C", "SHA-256", joined by "+"; "" for none
	Unverified  string        // why the S3 checksum was not checked, "" if it was
	FirstByte   time.Duration // from the call to the first response
	LastByte    time.Duration // from the call to the last byte in place, before the checksums are checked
	Elapsed     time.Duration // from the call to the last byte in place and verified
}

// Throughput returns bytes per second over the whole load, from the call
// to the bytes verified: the first-byte wait and the verification
// included. Size / (LastByte - FirstByte) is the rate the link carried
// once the bytes flowed.
func (s Stats) Throughput() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Size) / s.Elapsed.Seconds()
}

// String summarises the load in one line.
func (s Stats) String() string {
	verified := s.Verified
	if verified == "" {
		verified = "not verified"
	}
	return fmt.Sprintf("%s: %d bytes in %v (%.1f MiB/s), %d parts of %d MiB, %d at once, %d retries, first byte after %v, %s",
		s.Object, s.Size, s.Elapsed.Round(time.Millisecond), s.Throughput()/(1<<20), s.Parts, s.PartSize>>20,
		s.Concurrency, s.Retries, s.FirstByte.Round(time.Millisecond), verified)
}

// Load downloads the object at uri (s3://bucket/key) into a new memfd.File
// named after the key, verifies it, and seals it (unless Options.NoSeal).
// An empty object gives an empty file. On error no file is left open; if
// ctx ends first, the error is ctx's.
func (l *Loader) Load(ctx context.Context, uri string, optFns ...func(*Options)) (*memfd.File, Stats, error) {
	var f *memfd.File
	var res *reserver
	o := l.optionsFor(optFns)
	var mo memfd.Options
	for _, fn := range o.MemfdOptions {
		fn(&mo)
	}
	stats, err := l.load(ctx, uri, o, func(d *download) (io.WriterAt, error) {
		if f != nil { // a restart: the object changed
			res.stop()
			f.Close()
		}
		var err error
		f, err = memfd.New(path.Base(d.obj.Key), d.size, append(o.MemfdOptions, func(m *memfd.Options) { m.NoReserve = true })...)
		if err == nil && !mo.NoReserve {
			res = reserveBehind(f, o.Logger, d.reserveDown)
		}
		return f, err
	})
	res.stop()
	if err == nil && !o.NoSeal {
		if serr := f.Seal(); serr != nil {
			err = &Error{Object: stats.Object, Op: "create", End: -1, Attempt: 1, Err: serr, kind: ErrDestination}
		}
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, stats, err
	}
	return f, stats, nil
}

// reserver reserves a memfd's memory in the background, from its end
// down to the bytes in place from its start, while the parts are written
// from its start. Reserving the whole file first (memfd.New) takes about
// half a second per GiB on a small machine, before the first byte can be
// written: longer than the connections' buffers hold on a fast link.
// Pages a write has allocated cost the reservation nothing, and once the
// download is done nothing is left to reserve. It stops at the prefix in
// place because a consumer may have given back pages there (OnRelease),
// which reserving would take back.
type reserver struct {
	quit chan struct{}
	done chan struct{}
}

// reserveStep is 64 MiB: a fallocate that long takes a few tens of
// milliseconds, which OnRelease may wait.
const reserveStep = 64 << 20

// reserveBehind starts reserving f with reserve, a step at a time: it
// reserves bytes [start, end) of f, start no less than end-step, and
// returns start, or end if nothing below end is left to reserve.
func reserveBehind(f *memfd.File, log *slog.Logger, reserve func(f *memfd.File, end, step int64) (int64, error)) *reserver {
	r := &reserver{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for end := f.Size(); end > 0; {
			select {
			case <-r.quit:
				return
			default:
			}
			start, err := reserve(f, end, reserveStep)
			if err != nil {
				// The writes allocate what is left; a shortage shows
				// in them.
				log.Debug("s3load: reserving the memfd in the background", "err", err)
				return
			}
			if start >= end {
				return // down to the bytes in place
			}
			end = start
		}
	}()
	return r
}

// reserveDown reserves bytes [max(end-step, in place), end) of f and
// returns where they start. It holds the lock OnRelease is called with:
// pages given back are below the released bytes, no more than the bytes
// in place, and none are given back while it reserves.
func (d *download) reserveDown(f *memfd.File, end, step int64) (int64, error) {
	d.releaseMu.Lock()
	defer d.releaseMu.Unlock()
	start := max(end-step, d.inPlace.Load(), 0)
	if start >= end {
		return end, nil
	}
	return start, f.Reserve(start, end-start)
}

// stop ends the reservation and waits for it, so that the file may be
// closed. A nil reserver has nothing to stop.
func (r *reserver) stop() {
	if r == nil {
		return
	}
	select {
	case <-r.quit:
	default:
		close(r.quit)
	}
	<-r.done
}

// LoadTo downloads the object at uri (s3://bucket/key) into w, at the same
// offsets as in the object; WriteAt is called from several goroutines at
// once. On error, w may hold part of the object. For a memfd, pass a
// [memfd.File] rather than an *os.File: concurrent pwrite calls on one
// memfd contend in the kernel, and memfd.File makes them take turns.
func (l *Loader) LoadTo(ctx context.Context, uri string, w io.WriterAt, optFns ...func(*Options)) (Stats, error) {
	o := l.optionsFor(optFns)
	if _, ok := w.(io.ReaderAt); o.SHA256 != "" && !ok {
		return Stats{}, invalid("s3load: Options.SHA256 needs to read back what was written, but %T is not an io.ReaderAt", w)
	}
	return l.load(ctx, uri, o, func(*download) (io.WriterAt, error) { return w, nil })
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
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = 100 * time.Millisecond
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.MinSpeed == 0 {
		o.MinSpeed = DefaultMinSpeed
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// load runs a download, and once more if the object changed and
// RestartOnChange allows it.
func (l *Loader) load(ctx context.Context, uri string, o Options, open func(*download) (io.WriterAt, error)) (Stats, error) {
	start := time.Now()
	obj, err := ParseURI(uri)
	if err != nil {
		return Stats{}, err
	}
	if err := checkSHA256(o.SHA256); err != nil {
		return Stats{}, err
	}
	log := o.Logger.With("object", obj.String())
	for restarted := false; ; restarted = true {
		d := &download{client: l.client, obj: obj, opts: o, log: log, start: start}
		stats, err := d.run(ctx, open)
		stats.Restarted = restarted
		if err != nil && errors.Is(err, ErrObjectChanged) && o.RestartOnChange && !restarted && ctx.Err() == nil {
			log.Warn("s3load: object changed during the load; starting over", "err", err)
			continue
		}
		if err == nil {
			log.Info("s3load: loaded", "bytes", stats.Size, "parts", stats.Parts, "retries", stats.Retries,
				"verified", stats.Verified, "unverified", stats.Unverified, "elapsed", stats.Elapsed)
		}
		return stats, err
	}
}

// run gets the first part, which also tells the object's size and ETag,
// while HeadObject asks for its size and checksum; checks the two agree;
// opens the destination for that size; fetches the other parts
// concurrently, pinned to that version; and verifies the result.
func (d *download) run(ctx context.Context, open func(*download) (io.WriterAt, error)) (stats Stats, err error) {
	o := d.opts
	stats = Stats{Object: d.obj, PartSize: o.PartSize, Concurrency: o.Concurrency}
	defer func() { stats.Retries = int(d.retries.Load()) }()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var head headResult
	if !o.NoChecksum {
		wg.Go(func() { head = d.head(ctx) })
	}
	first, err := d.getFirst(ctx)
	stats.FirstByte = time.Since(d.start)
	if err != nil {
		return stats, d.fail(ctx, err)
	}
	d.size, d.etag, d.versionID, d.sized = first.size, first.etag, first.versionID, true
	wg.Wait()
	if first.unsatisfiable && o.NoChecksum {
		head = d.head(ctx) // only HeadObject can tell an empty object
	}
	if stats.Unverified, err = d.checkHead(head, first.unsatisfiable); err == nil {
		err = d.requireChecksum(stats.Unverified)
	}
	if err != nil {
		first.close()
		return stats, d.fail(ctx, err)
	}
	// Opening the destination reserves its memory (a memfd: fallocate of
	// the whole size, a fraction of a second for a gigabyte). The other
	// parts are requested meanwhile, and their bodies wait in the
	// connections' buffers until it is open (try), so that the link is
	// not idle while the memory is reserved.
	parts := numParts(d.size, o.PartSize)
	d.sched = newSchedule(parts, o.PartSize)
	d.order = newInOrder(d.crc, d.grown(parts))
	d.opened = make(chan struct{})
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	g, gctx := errgroup.WithContext(pctx)
	// A part is chosen once a connection is free for it, not before, so
	// that an Options.Order that comes midway applies to it.
	slots := make(chan struct{}, o.Concurrency)
	start := func(i int64, p *part) {
		g.Go(func() error {
			defer func() { <-slots }()
			return d.fetch(gctx, i, p)
		})
	}
	startNext := func() bool {
		select {
		case slots <- struct{}{}:
		case <-gctx.Done():
			return false
		}
		i, ok := d.sched.next()
		if !ok || gctx.Err() != nil {
			<-slots
			return false
		}
		stats.Parts++
		off := i * o.PartSize // < d.size: no overflow
		start(i, &part{start: off, end: off + min(o.PartSize, d.size-off) - 1})
		return true
	}
	opening := make(chan error, 1)
	go func() {
		var err error
		d.w, err = open(d)
		if err == nil {
			close(d.opened)
		}
		opening <- err
	}()
	if parts > 0 {
		stats.Parts = 1
		slots <- struct{}{} // the first part's
	}
	// The next parts are requested while the destination opens; one slot
	// stays the first part's.
	for range min(parts, int64(o.Concurrency)) - 1 {
		if !startNext() {
			break
		}
	}
	if err = <-opening; err != nil {
		first.close()
		pcancel()
		g.Wait()
		return stats, d.fail(ctx, &Error{Object: d.obj, Op: "create", End: -1, Attempt: 1, Err: err, kind: ErrDestination})
	}
	d.startFollow(ctx, &wg, parts)
	if parts > 0 {
		start(0, first)
	} else {
		first.close()
	}
	for startNext() {
	}
	if err = g.Wait(); err != nil {
		return stats, d.fail(ctx, err)
	}
	// Cancelled between parts, the loop stops starting them while those
	// started end well: no part failed, yet the object is not all in.
	if _, next := d.order.sum(); next < parts {
		return stats, d.fail(ctx, fmt.Errorf("s3load: %s: %d of %d parts in place when the parts stopped", d.obj, next, parts))
	}
	stats.Size, stats.LastByte = d.size, time.Since(d.start)
	if stats.Verified, err = d.verify(ctx); err != nil {
		return stats, d.fail(ctx, err)
	}
	stats.Elapsed = time.Since(d.start)
	return stats, nil
}

// numParts is how many parts of partSize make size bytes, without
// overflowing for any size and part size.
func numParts(size, partSize int64) int64 {
	n := size / partSize
	if size%partSize != 0 {
		n++
	}
	return n
}

// fail returns ctx's error if ctx ended, which then caused err.
func (d *download) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// download is the state one load shares between its parts.
type download struct {
	client Client
	obj    Object
	opts   Options
	log    *slog.Logger
	start  time.Time

	// Set from the first response, before the other parts start.
	sized     bool // the first response has come
	size      int64
	etag      string
	versionID string
	w         io.WriterAt
	opened    chan struct{}  // closed once w is open
	crc       *crcSpec       // the full-object checksum to verify, or nil
	crcWant   uint64         // its value, from HeadObject
	order     *inOrder       // the parts in place, and their CRC
	sched     *schedule      // the parts to start
	asking    atomic.Bool    // a goroutine is asking Options.Order
	asked     int64          // the prefix Order was last offered; the asker's
	ordered   atomic.Bool    // Options.Order has answered
	sha256    chan shaResult // the SHA-256 of the parts, when hashing
	inPlace   atomic.Int64   // bytes [0, inPlace) are in place
	releaseMu sync.Mutex     // held to release bytes, and to reserve them

	done       atomic.Int64
	retries    atomic.Int64
	progressMu sync.Mutex
	bufs       sync.Pool
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
