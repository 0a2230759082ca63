// Package llm runs a GGUF language model with llama.cpp on the CPU, loading
// it from a path or straight from a [memfd.File], and streams its answers to
// chat messages.
//
// llama.cpp comes as prebuilt shared libraries, release [LibraryVersion],
// built with every CPU variant: at run time ggml picks the fastest one this
// CPU can run (AMX on a Sapphire Rapids Xeon, AVX2 on an AMD EPYC, and so
// on), and [SystemInfo] says which. The binding is
// github.com/hybridgroup/yzma over purego and libffi (libffi.so.8 must be
// installed, or beside the libraries on Lambda's LD_LIBRARY_PATH): no cgo,
// so the module builds with CGO_ENABLED=0. [Load] finds the libraries
// through [Options.Library], $MEMLOAD_LLAMA_LIB or lib/ beside the
// executable; `make llama` installs them.
//
// Before llama.cpp sees a file, [Load] checks its GGUF header in Go, and
// what llama.cpp will assume of it (tensor types for their roles, the
// hyperparameters against each other and the tensors' shapes, the data's
// layout, the vocabulary as llama.cpp reads it; in full for the llama,
// qwen2 and qwen3 architectures), so that a truncated, foreign or damaged
// file gives an error matching [ErrInvalidModel] rather than aborting the
// process. A file llama.cpp refuses, or loads but cannot evaluate a first
// token of, matches it too, with llama.cpp's reason.
package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hybridgroup/yzma/pkg/llama"

	"github.com/memload/memload/llm/internal/gguf"
	"github.com/memload/memload/memfd"
)

// ErrInvalidModel is matched by the error of [Load] when the file is not a
// GGUF model that llama.cpp can load safely and run: the error names the
// key or tensor at fault and what llama.cpp needs, or gives llama.cpp's own
// reason. Loading the same file again will not help.
var ErrInvalidModel = errors.New("llm: invalid model file")

// ErrClosed is returned by [Model.Chat] after [Model.Close].
var ErrClosed = errors.New("llm: model is closed")

// Options configure [Load] and [LoadFile].
type Options struct {
	// Threads is the number of CPU threads llama.cpp computes with.
	// Default: runtime.GOMAXPROCS(0), which follows the CPU quota of the
	// container or Lambda function.
	Threads int

	// ContextSize is the context window in tokens, prompt and answer
	// together. Default: 4096, or the model's training context if smaller.
	// llama.cpp allocates its KV cache for the whole window (112 MiB at
	// 4096 tokens for a 1.5B model) and zeroes it; the zeroed pages are
	// given back after the load, so the cache holds memory only as
	// conversations fill it, up to that size.
	ContextSize int

	// BatchSize is the number of prompt tokens evaluated per llama.cpp call.
	// Default: 512.
	BatchSize int

	// NoMmap makes llama.cpp read the file into buffers of its own instead
	// of mapping it. For a memfd that only costs: the load copies every
	// weight and, until CloseFile closes the memfd, holds two copies;
	// afterwards the memory used is that of a mapped load. Use it when f is
	// to be reused or changed after the load. See BENCHMARKS.md.
	NoMmap bool

	// NoRepack keeps the weights in the file's layout. By default llama.cpp
	// copies the tensors its CPU kernels can use faster into buffers of
	// their own, laid out for them (AMX tiles, AVX2 interleaved blocks):
	// prompts are 1.5-3x faster, and with a mapped file the mapped pages of
	// those tensors are no longer read. See [Options.KeepRepacked].
	NoRepack bool

	// KeepRepacked keeps the memfd's pages of the tensors llama.cpp
	// repacked. By default [LoadFile] gives them back to the kernel
	// (fallocate PUNCH_HOLE) once the model is loaded, so that the weights
	// are held once, not twice; this needs a memfd that is not sealed
	// against writes (see memfd.File.PunchHole). A model loaded from a
	// path, with NoMmap or with NoRepack has nothing to give back.
	KeepRepacked bool

	// KeepPages keeps every page llama.cpp leaves unused, as llama.cpp
	// itself would: neither the memfd's pages of repacked tensors (as
	// KeepRepacked) nor the pages of the empty KV cache are given back,
	// and the KV cache is cleared as llama.cpp clears it, without the
	// pool of warm pages an early load touches for it or the mark for
	// huge pages (kvpages.go). These tricks read llama.cpp's log (the
	// patterns are tied to LibraryVersion) and glibc's chunk headers; set
	// it to rule them out when a model's answers or memory look wrong, at
	// the cost of holding the repacked weights twice, the KV cache whole
	// from the start, and a slower clear of it after the last byte.
	KeepPages bool

	// CloseFile makes [LoadFile] close the memfd once llama.cpp is done with
	// it: after the load, whether it succeeded or not. A mapped model keeps
	// the memfd's pages until [Model.Close]; with NoMmap they are freed.
	CloseFile bool

	// Template overrides the model's chat template: a name llama.cpp knows
	// (such as [TemplateChatML], [TemplateLlama3], "mistral-v7", "gemma";
	// see llama.cpp's llama_chat_builtin_templates), [TemplateDeepSeekR1],
	// or Jinja source. Jinja source is rendered as transformers does, or,
	// if the Jinja engine cannot render it, by llama.cpp's family for it
	// (with a warning in the log, and without tools).
	Template string

	// Library is the directory holding llama.cpp's libraries (libllama.so,
	// libggml.so, libggml-base.so and the libggml-cpu-*.so variants).
	// Default: $MEMLOAD_LLAMA_LIB, else lib/ beside the executable. A
	// process loads llama.cpp once: every Model uses the first directory.
	Library string

	// Logger receives load details, llama.cpp's own log (at Debug level,
	// warnings and errors at theirs). llama.cpp's log is process-wide: it
	// goes to the Logger of the most recently loaded Model. Default:
	// discard.
	Logger *slog.Logger
}

// Model is a loaded model with one llama.cpp context. It is safe for
// concurrent use: Chat calls are served one at a time.
type Model struct {
	path     string
	logger   *slog.Logger
	lib      *library
	tmpl     template
	ctxSize  int
	batchMax int
	loadDur  time.Duration
	loadEnd  time.Time // when the load ended, before it said so in the log
	given    int64     // bytes of the memfd given back after repacking
	kvGiven  int64     // bytes of the empty KV cache given back (kvpages.go)
	repacked int64     // bytes of the repack buffers

	// sem serialises Chat and Close; holding it grants use of the fields
	// below. llama.cpp contexts are not safe for concurrent use.
	sem     chan struct{}
	model   llama.Model
	vocab   llama.Vocab
	lctx    llama.Context
	batch   llama.Batch
	abortID uintptr
	abort   *atomic.Bool
	cached  []llama.Token // the tokens the KV cache holds, from position 0
	chunks  []int         // where the last prompt's chunks ended (see chunkEnds)
	closed  bool

	traceToken func(id int) // tests: sees every sampled token
}

// Load checks the GGUF model at path and loads it. ctx is checked before
// the load starts; llama.cpp cannot be interrupted while it loads.
func Load(ctx context.Context, path string, optFns ...func(*Options)) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("llm: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("llm: %w", err)
	}
	return load(ctx, path, f, fi.Size(), nil, options(optFns), nil)
}

// LoadFile loads the GGUF model held in the memory file f, through its
// /proc/self/fd path. By default llama.cpp maps f and computes from its
// pages: the model costs its size in memory once, not twice. See
// [Options.CloseFile], [Options.NoMmap] and [Options.KeepRepacked].
func LoadFile(ctx context.Context, f *memfd.File, optFns ...func(*Options)) (*Model, error) {
	o := options(optFns)
	m, err := load(ctx, f.Path(), f, f.Size(), f, o, nil)
	if o.CloseFile {
		if cerr := f.Close(); cerr != nil && err == nil {
			m.Close()
			return nil, fmt.Errorf("llm: close %s: %w", f.Path(), cerr)
		}
	}
	return m, err
}

func options(optFns []func(*Options)) Options {
	o := Options{Threads: runtime.GOMAXPROCS(0), ContextSize: 4096, BatchSize: 512}
	for _, fn := range optFns {
		fn(&o)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// loadMu serialises loads: llama.cpp's log callback is process-wide, and
// dispatches to the session of the one load in progress (session.go).
var loadMu sync.Mutex

// writing is what a load of a file still being written needs (see
// EarlyLoad); nil for a complete file.
type writing struct {
	wait     func(off, end int64) error // until bytes [off, end) are written
	inPlace  func(off, end int64) bool  // whether they are
	released int64                      // bytes whose pages may be given back now
	onWait   func(off, end int64)       // tests: llama.cpp waits at the gate
	onStart  func()                     // tests: the session has begun
	// watching is told of the load's repack watcher, so that pages are
	// given back as the writer releases them.
	watching func(*repackLog)
	gate     *gate // set by load: what the gate did
}

func load(ctx context.Context, path string, r io.ReaderAt, size int64, pages pageFile, o Options, w *writing) (*Model, error) {
	if o.Threads <= 0 || o.ContextSize <= 0 || o.BatchSize <= 0 {
		return nil, fmt.Errorf("llm: Threads (%d), ContextSize (%d) and BatchSize (%d) must be positive", o.Threads, o.ContextSize, o.BatchSize)
	}
	h, err := gguf.Parse(r, size)
	if err != nil {
		if errors.Is(err, gguf.ErrFormat) {
			return nil, fmt.Errorf("%w %s: %w", ErrInvalidModel, path, err)
		}
		return nil, fmt.Errorf("llm: read %s: %w", path, err)
	}
	if err := checkModel(path, h, o.Logger); err != nil {
		return nil, err
	}
	arch, _ := h.String("general.architecture")
	ctxSize := o.ContextSize
	if n, ok := h.Uint(arch + ".context_length"); ok && n > 0 && uint64(ctxSize) > n {
		ctxSize = int(n)
	}
	batch := min(o.BatchSize, ctxSize)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, err := openLibrary(o.Library)
	if err != nil {
		return nil, err
	}
	src := o.Template
	if src == "" {
		src, _ = h.String("tokenizer.chat_template")
	}
	tmpl, err := detectTemplate(src, o.Logger)
	if err != nil {
		return nil, err
	}

	loadMu.Lock()
	defer loadMu.Unlock()
	s := newSession(o.Logger)
	if pages != nil && !o.NoMmap && !o.NoRepack && !o.KeepRepacked && !o.KeepPages {
		released := size
		if w != nil {
			released = w.released
		}
		s.repack = watchRepack(pages, h, released)
		if w != nil {
			w.watching(s.repack)
		}
	}
	if w != nil && !o.NoMmap && !o.NoRepack {
		s.gate = newGate(h, w.wait, w.inPlace)
		s.gate.onWait, w.gate = w.onWait, s.gate
	}
	s.begin()
	defer s.end()
	if w != nil && w.onStart != nil {
		w.onStart()
	}
	o.Logger.Debug("llm: loading", "path", path, "arch", arch, "bytes", size, "template", tmpl.name,
		"threads", o.Threads, "context", ctxSize, "mmap", !o.NoMmap, "repack", !o.NoRepack, "system", l.String())

	// A load during the download touches the KV cache's pages in its
	// shadow (kvpages.go).
	var pool *kvPool
	if w != nil && !o.KeepPages {
		pool = newKVPool(kvCacheBytes(h, arch, ctxSize))
	}
	defer pool.release()

	start := time.Now()
	mp := llama.ModelDefaultParams()
	mp.LoadMode = llama.LoadModeMmap
	if o.NoMmap {
		mp.LoadMode = llama.LoadModeNone
	}
	mp.UseExtraBufts = 1
	if o.NoRepack {
		mp.UseExtraBufts = 0
	}
	mp.ProgressCallback, mp.ProgressCallbackUserData = progressCallback(), s.id
	model, err := llama.ModelLoadFromFile(path, mp)
	loaded := time.Now()
	if err != nil {
		s.repack.drop()
		if g := s.gate; g != nil && g.err != nil {
			return nil, fmt.Errorf("llm: the load of %s stopped: %w", path, g.err)
		}
		return nil, s.refused(path, "could not load", err)
	}
	if s.gate != nil {
		if err := s.gate.verdict(); err != nil {
			llama.ModelFree(model)
			s.repack.drop()
			return nil, fmt.Errorf("llm: %s: %w", path, err)
		}
	}
	cp := llama.ContextDefaultParams()
	cp.NCtx, cp.NBatch, cp.NUbatch, cp.NSeqMax = uint32(ctxSize), uint32(batch), uint32(batch), 1
	cp.NThreads, cp.NThreadsBatch = int32(o.Threads), int32(o.Threads)
	cp.Embeddings = 0
	m := &Model{
		path: path, logger: o.Logger, lib: l, tmpl: tmpl, batchMax: batch,
		sem:   make(chan struct{}, 1),
		model: model, vocab: llama.ModelGetVocab(model),
		abortID: abortIDs.Add(1), abort: new(atomic.Bool),
	}
	m.tmpl.setTokens(tokenText(m.vocab, llama.VocabBOS(m.vocab)), tokenText(m.vocab, llama.VocabEOS(m.vocab)), llama.VocabGetAddBOS(m.vocab))
	aborts.Store(m.abortID, m.abort)
	cp.AbortCallback, cp.AbortCallbackData = abortCallback(), m.abortID
	pool.release() // its warm pages are the cache's to take
	var kv *kvLog
	if !o.KeepPages {
		kv = watchKV()
		s.kv.Store(kv)
	}
	m.lctx, err = llama.InitFromModel(model, cp)
	s.kv.Store(nil)
	made := time.Now()
	if err == nil && kv != nil {
		var kerr error
		if m.kvGiven, kerr = kv.finish(); kerr != nil {
			o.Logger.Debug("llm: the empty KV cache's pages are kept", "err", kerr)
		}
	}
	if err != nil {
		aborts.Delete(m.abortID)
		llama.ModelFree(model)
		s.repack.drop()
		return nil, fmt.Errorf("llm: %s: llama.cpp could not create a context of %d tokens%s: %w", path, ctxSize, s.why(), err)
	}
	// llama.cpp pads the context (to 256 tokens); the window is the one
	// asked for.
	m.ctxSize = min(ctxSize, int(llama.NCtx(m.lctx)))
	m.batch = llama.BatchInit(int32(batch), 0, 1)
	kvDone := time.Now()
	if err := m.warmUp(s); err != nil {
		m.Close()
		s.repack.drop()
		return nil, err
	}
	warmed := time.Now()
	if s.repack != nil {
		var err error
		if m.given, err = s.repack.finish(h); err != nil {
			o.Logger.Warn("llm: the memfd's pages of repacked weights are kept: "+errSealedHint(err), "path", path)
		}
	}
	m.loadEnd = time.Now()
	m.loadDur = m.loadEnd.Sub(start)
	o.Logger.Debug("llm: load steps", "weights", loaded.Sub(start), "context", made.Sub(loaded),
		"kv give-back", kvDone.Sub(made), "warm-up", warmed.Sub(kvDone), "repack give-back", m.loadEnd.Sub(warmed))
	o.Logger.Info("llm: loaded", "path", path, "arch", arch, "template", tmpl.name, "cpu", l.variant,
		"given back", m.given, "kv given back", m.kvGiven, "duration", m.loadDur)
	return m, nil
}

// LoadDuration returns how long llama.cpp took to load the model and create
// its context, after the header check.
func (m *Model) LoadDuration() time.Duration { return m.loadDur }

// GivenBack returns the bytes of the memfd given back to the kernel after
// llama.cpp repacked their tensors (see [Options.KeepRepacked]).
func (m *Model) GivenBack() int64 { return m.given }

// Template returns the name of the chat template's family: llama.cpp's
// name for it (such as [TemplateChatML] or [TemplateLlama3]),
// [TemplateDeepSeekR1], or [TemplateJinja] (see [TemplateChatML] for the
// names of the tested templates).
func (m *Model) Template() string { return m.tmpl.name }

// Thinks reports whether the model reasons before it answers: its chat
// template opens a reasoning block ("<think>") in the generation prompt, so
// the answer starts with the reasoning and "</think>" ends it.
func (m *Model) Thinks() bool { return m.tmpl.think }

// Close frees the model and its context. It waits for a Chat in progress
// to finish. Calling it again does nothing.
func (m *Model) Close() error {
	m.sem <- struct{}{}
	defer func() { <-m.sem }()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.batch.Token != nil {
		llama.BatchFree(m.batch)
	}
	if m.lctx != 0 {
		llama.Free(m.lctx)
	}
	llama.ModelFree(m.model)
	aborts.Delete(m.abortID)
	m.model, m.lctx, m.batch = 0, 0, llama.Batch{}
	return nil
}
