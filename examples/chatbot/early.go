package main

// Loading the model while it downloads.
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
// load, so the load must wait for the last byte: on the 1.5B model it then
// ends about 1.0-1.1 s after it, at one thread. Without repacking the load
// takes 0.45 s, all of it under the download, and the memory is the same
// (the memfd's pages of repacked weights are given back otherwise), but
// prompts are slower: 20 against 29 tok/s with AVX2, 21 against 74 with
// AMX (BENCHMARKS.md, bench-llm); generation is memory-bound and the same.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/memload/memload/llm"
	"github.com/memload/memload/memfd"
	"github.com/memload/memload/s3load"
)

// earlyLoad is what loadEarly did, for the cold-start breakdown.
type earlyLoad struct {
	Stats      s3load.Stats // the download's
	Early      bool         // llama.cpp loaded the file as it downloaded, not after
	LastByte   time.Time    // the whole object was in place
	Verified   time.Time    // the download ended, its bytes verified
	LlamaStart time.Time    // llama.cpp's load started
	LlamaEnd   time.Time    // and ended
}

// loadEarly downloads the model at uri with dl into a memfd and loads it
// into llama.cpp configured by llmOpts. With NoRepack set and NoMmap not,
// llama.cpp's load starts as soon as the model's GGUF header is in place;
// otherwise, or if the object changed and the download started over
// (RestartOnChange), once the download is verified. Either way the model is
// returned only after every byte is in place and verified, and if the
// download fails, a model loaded early is closed unused. A cancelled ctx
// ends the download at once, but waits for a llama.cpp load in progress,
// which cannot be interrupted. The memfd is closed before loadEarly
// returns: a mapped model keeps its pages.
func loadEarly(ctx context.Context, dl *s3load.Loader, uri string, llmOpts ...func(*llm.Options)) (*llm.Model, earlyLoad, error) {
	var o llm.Options
	for _, fn := range llmOpts {
		fn(&o)
	}
	e := &early{ctx: ctx, eager: o.NoRepack && !o.NoMmap, llmOpts: llmOpts, grew: make(chan struct{})}
	f, st, err := dl.Load(ctx, uri, func(so *s3load.Options) {
		prev := so.OnPrefix
		so.OnPrefix = func(w io.WriterAt, n int64) {
			if prev != nil {
				prev(w, n)
			}
			e.prefix(w, n)
		}
	})
	res := earlyLoad{Stats: st, Verified: time.Now()}
	m, early, lerr := e.finish()
	res.LastByte, res.LlamaStart, res.LlamaEnd, res.Early = e.lastByte, e.start, e.end, early
	if err != nil {
		if m != nil {
			m.Close()
		}
		return nil, res, err
	}
	if !early { // not eager, or the object changed and the load started over
		if m != nil {
			m.Close()
		}
		res.LlamaStart = time.Now()
		m, lerr = llm.LoadFile(ctx, f, append(slices.Clip(llmOpts), func(o *llm.Options) { o.CloseFile = true })...)
		res.LlamaEnd = time.Now()
		return m, res, lerr
	}
	if cerr := f.Close(); cerr != nil && lerr == nil {
		lerr = fmt.Errorf("close %s: %w", f.Name(), cerr)
	}
	if lerr != nil {
		if m != nil {
			m.Close()
		}
		return nil, res, lerr
	}
	return m, res, nil
}

// errNoMore is what a read of the model gets when the bytes it waits for
// will not come: the download failed, or started over in another file.
var errNoMore = errors.New("the download ended before these bytes came")

// early follows one download's prefix in place and loads llama.cpp from it.
type early struct {
	ctx     context.Context
	eager   bool // start llama.cpp's load before the download ends
	llmOpts []func(*llm.Options)

	mu       sync.Mutex
	w        io.WriterAt   // the download's destination
	file     *os.File      // a descriptor of it, llama.cpp's
	size     int64         // its size
	n        int64         // bytes [0, n) are in place
	over     bool          // no more bytes will come to file
	grew     chan struct{} // closed and replaced when n grows or over is set
	lastByte time.Time

	start, end time.Time // llama.cpp's load, set before result
	result     chan loaded
}

type loaded struct {
	m   *llm.Model
	err error
}

// prefix is s3load's OnPrefix: the download's bytes [0, n) of w are in
// place. It must return quickly.
func (e *early) prefix(w io.WriterAt, n int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if sized, ok := w.(interface{ Size() int64 }); ok && n == sized.Size() {
		e.lastByte = time.Now()
	}
	switch {
	case e.over:
		return
	case e.w == nil:
		e.w = w
		if f, ok := w.(*memfd.File); ok && e.eager {
			// A descriptor of our own, opened now while the download's is
			// sure to be open: llama.cpp's path names this file even if
			// the download closes its descriptor before llama.cpp opens it.
			if file, err := os.Open(f.Path()); err == nil {
				e.file, e.size = file, f.Size()
				e.result = make(chan loaded, 1)
				go e.load()
			}
		}
	case w != e.w: // the object changed and the download started over
		e.stop()
		return
	}
	e.n = n
	close(e.grew)
	e.grew = make(chan struct{})
}

// stop records that no more bytes will come; e.mu is held.
func (e *early) stop() {
	if !e.over {
		e.over = true
		close(e.grew)
	}
}

// load waits for the GGUF header and loads llama.cpp from the file.
func (e *early) load() {
	n, err := llm.HeaderSize(e, e.size)
	if err == nil {
		err = e.wait(n)
	}
	if err != nil {
		e.result <- loaded{err: err}
		return
	}
	e.start = time.Now()
	m, err := llm.Load(e.ctx, fmt.Sprintf("/proc/self/fd/%d", e.file.Fd()), e.llmOpts...)
	e.end = time.Now()
	e.result <- loaded{m, err}
}

// ReadAt reads the file once the bytes asked for are in place.
func (e *early) ReadAt(p []byte, off int64) (int, error) {
	if err := e.wait(min(off+int64(len(p)), e.size)); err != nil {
		return 0, err
	}
	return e.file.ReadAt(p, off)
}

// wait waits until bytes [0, end) are in place.
func (e *early) wait(end int64) error {
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

// finish is called once the download has ended. It returns the model
// llama.cpp loaded early, if it did, whether it did so from the file the
// download completed, and the load's error.
func (e *early) finish() (*llm.Model, bool, error) {
	e.mu.Lock()
	switched := e.over // the download started over in another file
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
