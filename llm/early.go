package llm

// Loading a model while it downloads.
//
// llama.cpp, mapping a model without repacking it, reads only the GGUF
// header while it loads; the weights are read when the model computes.
// So the load can start as soon as the header is in the memfd and run
// while the weights arrive: llama.cpp maps the memfd MAP_SHARED through
// /proc/self/fd, so the pages written after the load are the pages it
// computes from. The model is handed out only once every byte is in and
// verified; if the download fails, the model is closed unused.
//
// With repacking (or NoMmap), llama.cpp reads every weight during its
// load, so the load must wait for the last byte.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/memload/memload/memfd"
)

// EarlyLoad loads a model into llama.cpp while its memfd is still being
// written, as s3load writes a download, and hands the model out only once
// the writer says every byte is in place and verified.
//
// Pass [EarlyLoad.Written] to the writer as its progress hook
// (s3load.Options.OnPrefix has its signature), then the writer's result to
// [EarlyLoad.Finish]. With [Options.NoRepack] set and [Options.NoMmap]
// not, llama.cpp's load starts as soon as the model's GGUF header is in
// place, and the model is ready a moment after the last byte. Otherwise
// llama.cpp reads every weight while it loads, and Finish loads the model
// after the writing, as [LoadFile] does.
type EarlyLoad struct {
	ctx    context.Context
	eager  bool // start llama.cpp's load before the writing ends
	optFns []func(*Options)
	// finished is set by Finish, which is called once, after the writing.
	finished bool

	mu   sync.Mutex
	w    io.WriterAt   // the writer's destination
	file *os.File      // a descriptor of it, llama.cpp's
	size int64         // its size
	n    int64         // bytes [0, n) are in place
	over bool          // no more bytes will come to file
	grew chan struct{} // closed and replaced when n grows or over is set

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
// bytes; a llama.cpp load in progress cannot be interrupted.
func NewEarlyLoad(ctx context.Context, optFns ...func(*Options)) *EarlyLoad {
	o := options(optFns)
	return &EarlyLoad{
		ctx:    ctx,
		eager:  o.NoRepack && !o.NoMmap,
		optFns: slices.Clip(optFns),
		grew:   make(chan struct{}),
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
	switch {
	case e.over:
		return
	case e.w == nil:
		e.w = w
		if f, ok := w.(*memfd.File); ok && e.eager {
			// A descriptor of our own, opened now while the writer's is
			// sure to be open: llama.cpp's path names this file even if
			// the writer closes its descriptor before llama.cpp opens it.
			if file, err := os.Open(f.Path()); err == nil {
				e.file, e.size = file, f.Size()
				e.result = make(chan earlyDone, 1)
				go e.load()
			}
		}
	case w != e.w:
		e.stop()
		return
	}
	e.n = max(e.n, n)
	close(e.grew)
	e.grew = make(chan struct{})
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
	m, early, lerr := e.wait()
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
	if !early {
		if m != nil {
			m.Close()
		}
		e.stats.Start = time.Now()
		m, lerr = LoadFile(e.ctx, f, append(e.optFns, func(o *Options) { o.CloseFile = true })...)
		e.stats.End = time.Now()
		return m, lerr
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

// load waits for the GGUF header and loads llama.cpp from the file.
func (e *EarlyLoad) load() {
	n, err := HeaderSize(prefixReader{e}, e.size)
	if err == nil {
		err = e.waitFor(n)
	}
	if err != nil {
		e.result <- earlyDone{err: err}
		return
	}
	start := time.Now()
	m, err := Load(e.ctx, fmt.Sprintf("/proc/self/fd/%d", e.file.Fd()), e.optFns...)
	e.stats = EarlyStats{Start: start, End: time.Now()}
	e.result <- earlyDone{m, err}
}

// prefixReader reads the file being written, each read once the bytes it
// asks for are in place.
type prefixReader struct{ e *EarlyLoad }

func (r prefixReader) ReadAt(p []byte, off int64) (int, error) {
	e := r.e
	if err := e.waitFor(min(off+int64(len(p)), e.size)); err != nil {
		return 0, err
	}
	return e.file.ReadAt(p, off)
}

// waitFor waits until bytes [0, end) are in place.
func (e *EarlyLoad) waitFor(end int64) error {
	for {
		e.mu.Lock()
		n, over, grew := e.n, e.over, e.grew
		e.mu.Unlock()
		switch {
		case n >= end:
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
	e.file.Close()
	if switched {
		return r.m, false, nil
	}
	return r.m, true, r.err
}
