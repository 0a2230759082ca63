// Package llm runs a GGUF language model with llama.cpp on the CPU, loading
// it from a path or straight from a [memfd.File], and streams its answers to
// chat messages.
//
// The binding is the llama package of github.com/ollama/ollama v0.11.4,
// which compiles its vendored llama.cpp with cgo from the module cache.
// (github.com/go-skynet/go-llama.cpp cannot be used: its module zip lacks
// the llama.cpp sources, a git submodule, and its 2023 llama.cpp cannot
// load qwen2 models.) Build with CGO_CFLAGS and CGO_CXXFLAGS set to
// "-O3 -march=x86-64-v3" on amd64: without them ggml has no AVX2 and runs
// 15-30 times slower. [Load] logs a warning when that happened.
//
// Before llama.cpp sees a file, [Load] checks its GGUF header in Go, so that
// a truncated or foreign file gives an error matching [ErrInvalidModel]
// rather than aborting the process.
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
	"time"
	"unsafe"

	"github.com/ollama/ollama/llama"

	"github.com/memload/memload/llm/internal/gguf"
	"github.com/memload/memload/memfd"
)

// ErrInvalidModel is matched by the error of [Load] when the file is not a
// GGUF model that llama.cpp can load safely.
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
	ContextSize int

	// BatchSize is the number of prompt tokens evaluated per llama.cpp call.
	// Default: 512.
	BatchSize int

	// NoMmap makes llama.cpp read the file into buffers of its own instead
	// of mapping it. For a memfd that only costs: the load copies every
	// weight (4x slower for a 1.1 GB model) and, until CloseFile closes the
	// memfd, holds two copies; afterwards the memory used and the speed are
	// those of a mapped load, where llama.cpp computes from the memfd's
	// pages directly. Use it when f is to be reused or changed after the
	// load. See BENCHMARKS.md.
	NoMmap bool

	// CloseFile makes [LoadFile] close the memfd once llama.cpp is done with
	// it: after the load, whether it succeeded or not. A mapped model keeps
	// the memfd's pages until [Model.Close]; with NoMmap they are freed.
	CloseFile bool

	// Template overrides the model's chat template: a family name
	// ([TemplateChatML], [TemplateDeepSeekR1], [TemplateLlama3]) or Jinja
	// source in which one of them can be recognised.
	Template string

	// Logger receives load details, llama.cpp's own log (at Debug level,
	// warnings and errors at theirs) and a warning when llama.cpp was
	// built without SIMD. llama.cpp's log is process-wide: it goes to the
	// Logger of the most recently loaded Model. Default: discard.
	Logger *slog.Logger
}

// Model is a loaded model with one llama.cpp context. It is safe for
// concurrent use: Chat calls are served one at a time.
type Model struct {
	path     string
	logger   *slog.Logger
	tmpl     template
	ctxSize  int
	batchMax int
	loadDur  time.Duration

	// sem serialises Chat and Close; holding it grants use of the fields
	// below. llama.cpp contexts are not safe for concurrent use.
	sem    chan struct{}
	model  *llama.Model
	lctx   *llama.Context
	cctx   unsafe.Pointer // lctx's C pointer, nil if unavailable
	batch  *llama.Batch
	abort  abortFlag
	closed bool

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
	return load(ctx, path, f, fi.Size(), options(optFns))
}

// LoadFile loads the GGUF model held in the memory file f, through its
// /proc/self/fd path. By default llama.cpp maps f and computes from its
// pages: the model costs its size in memory once, not twice. See
// [Options.CloseFile] and [Options.NoMmap].
func LoadFile(ctx context.Context, f *memfd.File, optFns ...func(*Options)) (*Model, error) {
	o := options(optFns)
	m, err := load(ctx, f.Path(), f, f.Size(), o)
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

// loadMu serialises loads: llama.cpp's log sink is process-wide.
var loadMu sync.Mutex

func load(ctx context.Context, path string, r io.ReaderAt, size int64, o Options) (*Model, error) {
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
	arch, _ := h.String("general.architecture")
	src := o.Template
	if src == "" {
		src, _ = h.String("tokenizer.chat_template")
	}
	tmpl, err := detectTemplate(src)
	if err != nil {
		return nil, err
	}
	ctxSize := o.ContextSize
	if n, ok := h.Uint(arch + ".context_length"); ok && n > 0 && uint64(ctxSize) > n {
		ctxSize = int(n)
	}
	batch := min(o.BatchSize, ctxSize)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	backendInit()
	loadMu.Lock()
	defer loadMu.Unlock()
	logSink.Store(o.Logger)
	info := SystemInfo()
	if ok, want := hasSIMD(info); !ok {
		o.Logger.Warn("llama.cpp was built without "+want+": inference is 15-30x slower; "+
			"rebuild with CGO_CFLAGS and CGO_CXXFLAGS set to -O3 -march=x86-64-v3 (amd64)", "system", info)
	}
	o.Logger.Debug("llm: loading", "path", path, "arch", arch, "bytes", size, "template", tmpl.name,
		"threads", o.Threads, "context", ctxSize, "mmap", !o.NoMmap, "system", info)

	start := time.Now()
	// LoadModelFromFile leaks its copy of the path (a few bytes per load).
	model, err := llama.LoadModelFromFile(path, llama.ModelParams{UseMmap: !o.NoMmap})
	if err != nil {
		return nil, fmt.Errorf("llm: llama.cpp could not load %s (set Options.Logger to see why): %w", path, err)
	}
	lctx, err := llama.NewContextWithModel(model, llama.NewContextParams(ctxSize, batch, 1, o.Threads, false, ""))
	if err != nil {
		llama.FreeModel(model)
		return nil, fmt.Errorf("llm: %s: %w", path, err)
	}
	cctx := contextPtr(lctx)
	if cctx == nil {
		o.Logger.Warn("llm: cannot reach llama.cpp's context: it will not be freed, and cancellation waits for the current batch")
	}
	disableEmbeddings(cctx)
	b, err := llama.NewBatch(batch, 1, 0)
	if err != nil {
		freeContext(cctx)
		llama.FreeModel(model)
		return nil, fmt.Errorf("llm: %w", err)
	}
	m := &Model{
		path: path, logger: o.Logger, tmpl: tmpl, ctxSize: contextSize(cctx, ctxSize), batchMax: batch,
		loadDur: time.Since(start),
		sem:     make(chan struct{}, 1),
		model:   model, lctx: lctx, cctx: cctx, batch: b, abort: newAbortFlag(cctx),
	}
	o.Logger.Info("llm: loaded", "path", path, "arch", arch, "template", tmpl.name, "duration", m.loadDur)
	return m, nil
}

// LoadDuration returns how long llama.cpp took to load the model and create
// its context, after the header check.
func (m *Model) LoadDuration() time.Duration { return m.loadDur }

// Template returns the name of the chat template family in use.
func (m *Model) Template() string { return m.tmpl.name }

// Close frees the model and its context. It waits for a Chat in progress
// to finish. Calling it again does nothing.
func (m *Model) Close() error {
	m.sem <- struct{}{}
	defer func() { <-m.sem }()
	if m.closed {
		return nil
	}
	m.closed = true
	m.batch.Free()
	freeContext(m.cctx)
	llama.FreeModel(m.model)
	m.abort.free()
	m.model, m.lctx, m.batch = nil, nil, nil
	return nil
}
