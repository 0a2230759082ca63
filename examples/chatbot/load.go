package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/s3load"
)

// processStart approximates when the process started: package variables
// are initialised before main runs.
var processStart = time.Now()

// coldStart is the breakdown of a model load, logged once and shown by
// /healthz.
type coldStart struct {
	Source     string  `json:"source"`
	Bytes      int64   `json:"bytes"`
	Verified   string  `json:"verified,omitempty"` // checks passed, as s3load.Stats.Verified
	Retries    int     `json:"retries,omitempty"`  // ranged GETs retried
	Attempts   int     `json:"attempts"`           // loads tried, the last one included
	ProcessMS  float64 `json:"process_ms"`         // process start to the load's start (runtime, config)
	ConfigMS   float64 `json:"config_ms"`          // AWS configuration and credentials
	DownloadMS float64 `json:"download_ms"`        // first request to last byte in memory
	VerifyMS   float64 `json:"verify_ms"`          // after the last byte: checksum and SHA-256 checks, sealing
	LlamaMS    float64 `json:"llama_load_ms"`      // GGUF check and llama.cpp load
	TotalMS    float64 `json:"total_ms"`           // process start to model ready
	MiBPerSec  float64 `json:"download_mib_s"`     // bytes / download_ms: the first-byte wait included
	FirstByte  float64 `json:"first_byte_ms"`      // first request to first response
	Template   string  `json:"template,omitempty"` // chat template family
	LoadedInit bool    `json:"loaded_in_init"`     // ready before the first request was taken (Lambda)
	Threads    int     `json:"threads"`            // llama.cpp threads
	Context    int     `json:"context_size"`       // context window asked for
	Mmap       bool    `json:"mmap"`               // llama.cpp maps the memfd: one copy of the weights
	Repack     bool    `json:"repack"`             // llama.cpp repacked the weights (REPACK)
	Early      bool    `json:"early_load"`         // llama.cpp loaded while the model downloaded
	Error      string  `json:"error,omitempty"`    // why the load failed

	// Of a load from S3: the rate the link reached once the bytes flowed,
	// bytes / (download_ms - first_byte_ms), and how long the model
	// trailed the last byte (verify_ms, llama_load_ms and the steps
	// between), what overlapping the two would save.
	LinkMiBPerSec      float64 `json:"link_mib_s,omitempty"`
	ReadyAfterLastByte float64 `json:"ready_after_last_byte_ms,omitempty"`

	// Of a load from S3 with REPACK: llama.cpp repacked each weight as
	// soon as its bytes came (gated), or, should its log not add up to
	// what llm knows of the library, waited for the last byte (fallback:
	// why); and how often and how long it waited for bytes.
	Gated        bool    `json:"gated"`
	Fallback     string  `json:"fallback,omitempty"`
	GateWaits    int     `json:"gate_waits,omitempty"`
	GateWaitedMS float64 `json:"gate_waited_ms,omitempty"`
}

// loader loads the model once, in the background, and lets requests wait
// for it.
type loader struct {
	done chan struct{} // closed when model or err is set

	model *llm.Model
	err   error
	cold  coldStart

	mu    sync.Mutex
	phase string // "config", "download", "verify", "llama.cpp", "ready", "failed"

	loaded, total atomic.Int64 // download progress

	// cancelling counts generations being cancelled: while it is not
	// zero, llama.cpp's errors about the aborted computation are logged
	// at Debug, not as errors.
	cancelling atomic.Int32
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// startLoad starts loading the model cfg names and returns at once. A
// failed load is tried again after LoadBackoff, doubled each time, up to
// LoadAttempts in all. A successful one is logged, and written to met as
// embedded metrics.
func startLoad(ctx context.Context, cfg config, logger *slog.Logger, met *metrics) *loader {
	l := &loader{done: make(chan struct{}), phase: "config"}
	llmLog := slog.New(&quietCancel{Handler: logger.Handler(), active: &l.cancelling})
	go func() {
		defer close(l.done)
		backoff := cfg.LoadBackoff
		for attempt := 1; ; attempt++ {
			l.model, l.cold, l.err = l.load(ctx, cfg, logger, llmLog)
			l.cold.Attempts = attempt
			// An invalid model file or unusable llama.cpp libraries do
			// not heal: no retry.
			if l.err == nil || attempt >= cfg.LoadAttempts || ctx.Err() != nil ||
				errors.Is(l.err, llm.ErrInvalidModel) || errors.Is(l.err, llm.ErrLibrary) {
				break
			}
			logger.Warn("model load failed; retrying", "uri", cfg.ModelURI, "attempt", attempt, "attempts", cfg.LoadAttempts,
				"retry_in", backoff.String(), "err", l.err)
			l.loaded.Store(0)
			l.setPhase("retry")
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			backoff *= 2
		}
		if l.err != nil {
			l.setPhase("failed")
			l.cold.Error = l.err.Error()
			logger.Error("model load failed", "uri", cfg.ModelURI, "attempts", l.cold.Attempts, "err", l.err,
				"invalid_model", errors.Is(l.err, llm.ErrInvalidModel))
			return
		}
		l.setPhase("ready")
		c := l.cold
		logger.Info("cold start", "uri", cfg.ModelURI, "bytes", c.Bytes, "verified", c.Verified,
			"process_ms", c.ProcessMS, "config_ms", c.ConfigMS, "download_ms", c.DownloadMS,
			"verify_ms", c.VerifyMS, "llama_load_ms", c.LlamaMS, "total_ms", c.TotalMS,
			"download_mib_s", c.MiBPerSec, "link_mib_s", c.LinkMiBPerSec, "ready_after_last_byte_ms", c.ReadyAfterLastByte,
			"retries", c.Retries, "attempts", c.Attempts, "threads", c.Threads, "template", c.Template,
			"repack", c.Repack, "early_load", c.Early, "gated", c.Gated, "fallback", c.Fallback,
			"gate_waits", c.GateWaits, "gate_waited_ms", c.GateWaitedMS)
		met.put(coldStartMetrics(c), map[string]any{"Event": "cold_start", "Template": c.Template, "Source": cfg.ModelURI})
	}()
	return l
}

// quietCancel logs llama.cpp's complaints about an aborted computation at
// Debug while a generation is being cancelled: a client that goes away is
// not an error.
type quietCancel struct {
	slog.Handler
	active *atomic.Int32
}

func (q *quietCancel) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError && q.active.Load() > 0 && strings.HasPrefix(r.Message, "llama.cpp: ") {
		r.Level = slog.LevelDebug
		if !q.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return q.Handler.Handle(ctx, r)
}

func (q *quietCancel) WithAttrs(as []slog.Attr) slog.Handler {
	return &quietCancel{Handler: q.Handler.WithAttrs(as), active: q.active}
}

func (q *quietCancel) WithGroup(name string) slog.Handler {
	return &quietCancel{Handler: q.Handler.WithGroup(name), active: q.active}
}

func (l *loader) setPhase(p string) {
	l.mu.Lock()
	l.phase = p
	l.mu.Unlock()
}

// state returns the phase and the download progress.
func (l *loader) state() (phase string, loaded, total int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.phase, l.loaded.Load(), l.total.Load()
}

// ready returns the model, or nil while it is loading, and the load error.
func (l *loader) ready() (*llm.Model, error) {
	select {
	case <-l.done:
		return l.model, l.err
	default:
		return nil, nil
	}
}

// wait waits for the model until ctx is done.
func (l *loader) wait(ctx context.Context) (*llm.Model, error) {
	select {
	case <-l.done:
		return l.model, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// close frees the model once it is loaded.
func (l *loader) close() {
	<-l.done
	if l.model != nil {
		l.model.Close()
	}
}

func (l *loader) load(ctx context.Context, cfg config, logger, llmLog *slog.Logger) (*llm.Model, coldStart, error) {
	start := time.Now()
	c := coldStart{Source: cfg.ModelURI, ProcessMS: ms(start.Sub(processStart)), Threads: cfg.Threads, Context: cfg.ContextSize, Mmap: true, Repack: cfg.Repack}
	llmOpts := func(o *llm.Options) {
		if cfg.Threads > 0 {
			o.Threads = cfg.Threads
		}
		c.Threads = o.Threads
		o.ContextSize = cfg.ContextSize
		o.Template = cfg.Template
		o.NoRepack = !cfg.Repack
		o.CloseFile = true
		o.Logger = llmLog
	}
	if !strings.HasPrefix(cfg.ModelURI, "s3://") {
		// A local file, for development: no download.
		l.setPhase("llama.cpp")
		t := time.Now()
		m, err := llm.Load(ctx, cfg.ModelURI, llmOpts)
		if err != nil {
			return nil, c, err
		}
		c.LlamaMS = ms(time.Since(t))
		c.TotalMS = ms(time.Since(processStart))
		c.Template = m.Template()
		return m, c, nil
	}

	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, cfg.awsOptions...)
	if err != nil {
		return nil, c, fmt.Errorf("AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		// An endpoint override means an S3-compatible server such as MinIO,
		// which wants path-style requests.
		o.UsePathStyle = o.BaseEndpoint != nil
	})
	c.ConfigMS = ms(time.Since(start))

	l.setPhase("download")
	// memload.Load owns the path: the download into a memfd with room
	// left for llama.cpp's context, the SHA-256 checked as the parts
	// land, llama.cpp's load started during the download where it can be,
	// and the memfd closed once llama.cpp has it.
	m, st, err := memload.Load(ctx, client, cfg.ModelURI, func(o *memload.Options) {
		o.SHA256 = cfg.ModelSHA256
		o.Headroom = memload.EstimateHeadroom(cfg.ContextSize)
		o.Logger = logger
		o.LLMOptions = append(o.LLMOptions, llmOpts)
		o.OnVerified = func() { l.setPhase("llama.cpp") }
		o.S3Options = append(o.S3Options, func(o *s3load.Options) {
			o.Progress = func(done, total int64) {
				l.loaded.Store(done)
				l.total.Store(total)
				if done == total {
					l.setPhase("verify")
				}
			}
		})
	})
	ds := st.Download
	c.DownloadMS, c.VerifyMS = ms(ds.LastByte), ms(ds.Elapsed-ds.LastByte)
	c.Bytes, c.Verified, c.Retries = ds.Size, ds.Verified, ds.Retries
	c.FirstByte = ms(ds.FirstByte)
	if ds.LastByte > 0 {
		c.MiBPerSec = float64(ds.Size) / (1 << 20) / ds.LastByte.Seconds()
	}
	c.LinkMiBPerSec = st.LinkRate() / (1 << 20)
	if err != nil {
		return nil, c, err
	}
	c.Early = st.Model.Early
	c.Gated, c.Fallback = st.Model.Gated, st.Model.Fallback
	c.GateWaits, c.GateWaitedMS = st.Model.Waits, ms(st.Model.Waited)
	c.LlamaMS = ms(st.Model.End.Sub(st.Model.Start))
	c.TotalMS = ms(st.Ready.Sub(processStart))
	c.ReadyAfterLastByte = ms(st.ReadyAfterLastByte())
	c.Template = m.Template()
	return m, c, nil
}
