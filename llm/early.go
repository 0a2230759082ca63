package llm

// Loading a model while it downloads.
//
// llama.cpp maps the memfd MAP_SHARED through /proc/self/fd, so the pages
// written after its load started are the pages it reads. Mapping a model,
// it reads during its load only the GGUF header and the tensors it
// repacks, and those one at a time, each announced in its log just before
// (gate.go). So the load starts as soon as the header is in the memfd, and
// llama.cpp waits at each repacked tensor until the writer has written
// it: the repacking runs under the download, and the model is ready a
// moment after the last byte. Without repacking it waits for nothing. The
// model is handed out only once every byte is in and verified; if the
// writing fails, is cancelled or starts over, the waiting load is ended
// (llama.cpp's progress callback) and nothing is handed out.
//
// With NoMmap, llama.cpp reads every weight during its load, so the load
// waits for the last byte.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/memload/memload/memfd"
)

// EarlyLoad loads a model into llama.cpp while its memfd is still being
// written, as s3load writes a download, and hands the model out only once
// the writer says every byte is in place and verified.
//
// Pass [EarlyLoad.Written] to the writer as its progress hook
// (s3load.Options.OnPrefix has its signature), and [EarlyLoad.WrittenRange]
// if it writes out of order (s3load.Options.OnPart), then the writer's
// result to [EarlyLoad.Finish]. Unless [Options.NoMmap] is set, llama.cpp's load
// starts as soon as the model's GGUF header is in place, and, repacking,
// waits at each tensor it repacks until its bytes are written; the model
// is ready a moment after the last byte. Should llama.cpp's log not add up
// to what this package knows of llama.cpp [LibraryVersion], the load
// waits for the last byte instead, and [EarlyStats] says why. With NoMmap,
// Finish loads the model after the writing, as [LoadFile] does.
//
// The memfd's pages of the tensors llama.cpp repacked are given back
// (see [Options.KeepRepacked]) once the writer will not read them again:
// call [EarlyLoad.Verified] as it verifies them, or they are given back
// at Finish. Loads in a process run one at a time: another Load waits
// while this one waits for the writer.
//
// While the file is written, the load touches as much memory as
// llama.cpp's KV cache will take, on a thread of low priority, and hands
// it back just before llama.cpp clears the cache, so that the clear after
// the last byte finds warm pages (unless [Options.KeepPages] is set). That
// thread is one for the process and stays, parked, after the load: a
// goroutine leak check sees it (goleak.IgnoreAnyFunction with
// "github.com/memload/memload/internal/idle.worker").
type EarlyLoad struct {
	ctx    context.Context
	eager  bool // start llama.cpp's load before the writing ends
	optFns []func(*Options)
	// finished is set by Finish, which is called once, after the writing.
	finished bool

	mu       sync.Mutex
	w        io.WriterAt   // the writer's destination
	file     *os.File      // a descriptor of it, llama.cpp's
	size     int64         // its size
	n        int64         // bytes [0, n) are in place
	ranges   []span        // and these, past n: sorted, apart (WrittenRange)
	verified int64         // bytes [0, verified) will not be read back
	over     bool          // no more bytes will come to file
	grew     chan struct{} // closed and replaced when bytes come or over is set
	rec      *repackLog    // the load's, to give back pages as verified grows

	onWait  func(off, end int64) // tests: llama.cpp waits at the gate
	onStart func()               // tests: llama.cpp's load starts
	ended   chan struct{}        // closed when a load started early ends

	stats  EarlyStats     // set by the load before it sends its result
	result chan earlyDone // nil unless a load started early
}

// EarlyStats tell what an [EarlyLoad] did.
type EarlyStats struct {
	// Early is set if the model Finish returned was loaded while its file
	// was written.
	Early bool
	// Start and End bound llama.cpp's last load, zero if none started:
	// that of the model Finish returned, or of a model Finish closed
	// unused because the writing failed.
	Start, End time.Time
	// Gated is set if llama.cpp, repacking, read each repacked tensor as
	// soon as it was written, waiting at the gate when it came first.
	Gated bool
	// Fallback says why llama.cpp waited for the last byte before it
	// read any weight, or loaded the model again after it; "" if it did
	// not. The model is then as good, only ready later.
	Fallback string
	// Waits counts the times llama.cpp waited for a tensor's bytes, and
	// Waited adds up how long.
	Waits  int
	Waited time.Duration
}

type earlyDone struct {
	m   *Model
	err error
}

// errNoMore is what a read of the model gets when the bytes it waits for
// will not come: the writing failed, or started over in another file.
var errNoMore = errors.New("llm: the file's writing ended before these bytes came")

// NewEarlyLoad returns an EarlyLoad of a model to be loaded with the
// options optFns set, as [LoadFile]'s. ctx bounds the wait for the file's
// bytes: cancelling it ends a llama.cpp load waiting at a tensor, as a
// failed or restarted writing does.
func NewEarlyLoad(ctx context.Context, optFns ...func(*Options)) *EarlyLoad {
	o := options(optFns)
	return &EarlyLoad{
		ctx:    ctx,
		eager:  !o.NoMmap,
		optFns: slices.Clip(optFns),
		grew:   make(chan struct{}),
		ended:  make(chan struct{}),
	}
}

// Written tells e that bytes [0, n) of w are in place. It returns at once.
// The first call with a *memfd.File starts llama.cpp's load in the
// background, if e loads early; a later call with another w means the
// writing started over in another file (an object that changed while it
// downloaded), and the early load is dropped.
func (e *EarlyLoad) Written(w io.WriterAt, n int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.attach(w) {
		return
	}
	e.n = max(e.n, n)
	e.ranges = slices.DeleteFunc(e.ranges, func(s span) bool { return s.end <= e.n })
	e.grown()
}

// WrittenRange tells e that bytes [start, end) of w are in place, wherever
// they lie in the file, as [EarlyLoad.Written] does for a prefix
// (s3load.Options.OnPart has its signature). llama.cpp then waits at a
// repacked tensor only until its own bytes are in, not those before it:
// a writer that fetches the tensors in the order llama.cpp loads them
// (s3load.Options.Order) keeps it from waiting for the file's order. It
// returns at once, and may be called from several goroutines.
func (e *EarlyLoad) WrittenRange(w io.WriterAt, start, end int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.attach(w) || end <= max(start, e.n) {
		return
	}
	e.ranges = addSpan(e.ranges, span{start, end})
	e.grown()
}

// attach makes w the file written, starting llama.cpp's load on the first
// one, and reports whether its bytes count; e.mu is held.
func (e *EarlyLoad) attach(w io.WriterAt) bool {
	switch {
	case e.over:
		return false
	case e.w == nil:
		e.w = w
		if f, ok := w.(*memfd.File); ok && e.eager {
			// A descriptor of our own, opened now while the writer's is
			// sure to be open: llama.cpp's path names this file even if
			// the writer closes its descriptor before llama.cpp opens it.
			// Read-write, to give back pages of repacked tensors.
			file, err := os.OpenFile(f.Path(), os.O_RDWR, 0)
			if err != nil {
				file, err = os.Open(f.Path())
			}
			if err == nil {
				e.file, e.size = file, f.Size()
				e.result = make(chan earlyDone, 1)
				go e.load()
			}
		}
	case w != e.w:
		e.stop()
		return false
	}
	return true
}

// grown wakes those waiting for bytes; e.mu is held.
func (e *EarlyLoad) grown() {
	close(e.grew)
	e.grew = make(chan struct{})
}

// addSpan adds s to spans, sorted and apart, merging what touches it.
func addSpan(spans []span, s span) []span {
	i := sort.Search(len(spans), func(i int) bool { return spans[i].end >= s.off })
	j := i
	for j < len(spans) && spans[j].off <= s.end {
		s.off, s.end = min(s.off, spans[j].off), max(s.end, spans[j].end)
		j++
	}
	return slices.Replace(spans, i, j, s)
}

// Verified tells e that the writer will not read bytes [0, n) of the file
// again: it has verified them (s3load reads its destination back to hash
// it with Options.SHA256), or verifies nothing. The memfd's pages of
// tensors llama.cpp has repacked are given back only once verified, so
// that the writer reads the bytes it wrote, not zeros; without calls, at
// Finish. A writer that verifies nothing calls it with each Written.
func (e *EarlyLoad) Verified(n int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n <= e.verified || e.over {
		return
	}
	e.verified = n
	if e.rec != nil {
		e.rec.release(n)
	}
}

// Finish is called once the writing has ended, with the file written, its
// bytes complete and verified, or the error that ended the writing. It
// returns the model: loaded early from f, or now. Finish takes f: it is
// closed before Finish returns, a mapped model keeping its pages. If err
// is not nil, a model loaded early is closed unused and err returned.
// Call it once.
func (e *EarlyLoad) Finish(f *memfd.File, err error) (*Model, error) {
	if e.finished {
		return nil, errors.New("llm: EarlyLoad.Finish called twice")
	}
	e.finished = true
	if err == nil && f != nil {
		e.Written(f, f.Size()) // complete: whatever the writer told
	}
	m, early, lerr := e.wait()
	if e.file != nil {
		defer e.file.Close() // after the pages are given back through it
	}
	if err != nil {
		if m != nil {
			m.Close()
		}
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	if f == nil {
		if m != nil {
			m.Close()
		}
		return nil, errors.New("llm: EarlyLoad.Finish: no file and no error")
	}
	if errors.Is(lerr, errGateFallback) {
		if e.rec != nil && e.rec.gaveBack() {
			// The file lacks pages the load gave back: it cannot be
			// loaded again. Only a llama.cpp that reads what it does not
			// announce gets here.
			f.Close()
			return nil, fmt.Errorf("%w, and pages of the file were given back already: load the model again, with Options.KeepPages", lerr)
		}
		early = false // loaded again below, from the complete file
	}
	if !early {
		if m != nil {
			m.Close()
		}
		e.stats.Start, e.stats.Gated = time.Now(), false
		m, lerr = LoadFile(e.ctx, f, append(e.optFns, func(o *Options) { o.CloseFile = true })...)
		e.stats.End = time.Now()
		return m, lerr
	}
	if e.rec != nil && lerr == nil {
		// Verified: the pages of repacked tensors can go.
		given, perr := e.rec.release(e.size)
		m.given = given
		if perr != nil {
			m.logger.Warn("llm: the memfd's pages of repacked weights are kept: "+errSealedHint(perr), "path", m.path)
		}
	}
	if cerr := f.Close(); cerr != nil && lerr == nil {
		lerr = fmt.Errorf("llm: close %s: %w", f.Path(), cerr)
	}
	if lerr != nil {
		if m != nil {
			m.Close()
		}
		return nil, lerr
	}
	e.stats.Early = true
	return m, nil
}

// Stats returns what e did; call it after Finish.
func (e *EarlyLoad) Stats() EarlyStats { return e.stats }

// stop records that no more bytes will come; e.mu is held.
func (e *EarlyLoad) stop() {
	if !e.over {
		e.over = true
		close(e.grew)
	}
}

// load waits for the GGUF header and loads llama.cpp from the file,
// gating its reads of the weights.
func (e *EarlyLoad) load() {
	defer close(e.ended)
	n, err := HeaderSize(prefixReader{e}, e.size)
	if err == nil {
		err = e.waitFor(0, n)
	}
	if err != nil {
		e.result <- earlyDone{err: err}
		return
	}
	e.mu.Lock()
	w := &writing{
		wait: e.waitFor, inPlace: e.inPlace, released: e.verified, onWait: e.onWait, onStart: e.onStart,
		watching: func(r *repackLog) {
			e.mu.Lock()
			e.rec = r
			e.mu.Unlock()
		},
	}
	e.mu.Unlock()
	start := time.Now()
	m, err := load(e.ctx, fmt.Sprintf("/proc/self/fd/%d", e.file.Fd()), e.file, e.size, fdPages{e.file, e.size},
		options(e.optFns), w)
	e.stats = EarlyStats{Start: start, End: time.Now()}
	if m != nil {
		e.stats.End = m.loadEnd // before its log line, which a Logger may act on
	}
	if g := w.gate; g != nil {
		e.stats.Gated = g.fallback == "" && err == nil
		e.stats.Fallback, e.stats.Waits, e.stats.Waited = g.fallback, g.waits, g.waited
	}
	e.result <- earlyDone{m, err}
}

// inPlace reports whether bytes [off, end) are in place.
func (e *EarlyLoad) inPlace(off, end int64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inPlaceLocked(off, end)
}

func (e *EarlyLoad) inPlaceLocked(off, end int64) bool {
	off = max(off, e.n)
	if off >= end {
		return true
	}
	for _, s := range e.ranges {
		if s.off <= off && end <= s.end {
			return true
		}
	}
	return false
}

// fdPages gives back pages of a memfd through a descriptor of its own.
type fdPages struct {
	f    *os.File
	size int64
}

func (p fdPages) Size() int64 { return p.size }

// prefixReader reads the file being written, each read once the bytes it
// asks for are in place.
type prefixReader struct{ e *EarlyLoad }

func (r prefixReader) ReadAt(p []byte, off int64) (int, error) {
	e := r.e
	if err := e.waitFor(off, min(off+int64(len(p)), e.size)); err != nil {
		return 0, err
	}
	return e.file.ReadAt(p, off)
}

// waitFor waits until bytes [off, end) are in place.
func (e *EarlyLoad) waitFor(off, end int64) error {
	for {
		e.mu.Lock()
		in, over, grew := e.inPlaceLocked(off, end), e.over, e.grew
		e.mu.Unlock()
		switch {
		case in:
			return nil
		case over:
			return errNoMore
		}
		select {
		case <-grew:
		case <-e.ctx.Done():
			return e.ctx.Err()
		}
	}
}

// wait ends the writing and waits for a load started early: its model,
// whether it loaded the file the writing completed, and its error.
func (e *EarlyLoad) wait() (*Model, bool, error) {
	e.mu.Lock()
	switched := e.over // the writing started over in another file
	e.stop()
	e.mu.Unlock()
	if e.result == nil {
		return nil, false, nil
	}
	r := <-e.result
	if switched {
		return r.m, false, nil
	}
	return r.m, true, r.err
}
