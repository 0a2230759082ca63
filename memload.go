package memload

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/memload/memload/llm"
	"github.com/memload/memload/memfd"
	"github.com/memload/memload/s3load"
)

// Options configure [Load]. Zero values take the defaults.
type Options struct {
	// SHA256 is the model's expected SHA-256 in hex. Each part is hashed
	// as soon as it and those before it are in place, and a mismatch
	// fails the load with s3load.ErrChecksum before a model is handed out.
	// Empty: the object's S3 checksum is checked if it has one
	// (s3load.Stats.Verified says what was).
	SHA256 string

	// Headroom is the memory, in bytes, the process needs besides the
	// model: llama.cpp's KV cache, its compute buffers and the rest of the
	// process. A model that fits but leaves less than this fails at once
	// with memfd.ErrInsufficientMemory, rather than the process being
	// killed past its cgroup's limit (Lambda's memory size) later on.
	// Default: [EstimateHeadroom] of the context size the LLM options ask
	// for. Negative: no room asked for.
	Headroom int64

	// OnVerified, if set, is called once the download is verified, before
	// what is left of llama.cpp's load (all of it, when the load could not
	// start during the download): a moment to show a phase.
	OnVerified func()

	// Logger receives s3load's and llm's log lines, unless S3Options or
	// LLMOptions set a Logger of their own. Default: discard.
	Logger *slog.Logger

	// S3Options configure the download (part size, concurrency, retries,
	// Progress, RestartOnChange, ...), applied after Load's own settings:
	// SHA256, Logger, the memfd's Headroom, and Order, which asks for the
	// tensors in the order llama.cpp loads them (llm.ReadOrder; set it to
	// nil for the file's order). Load then sets NoSeal and chains its
	// OnPrefix, OnPart and OnRelease after the ones given here.
	S3Options []func(*s3load.Options)

	// LLMOptions configure llama.cpp's load and the model (threads,
	// context size, NoRepack, template, ...). Load closes the memfd once
	// llama.cpp has mapped it, whatever CloseFile says. They are applied
	// more than once (to read the context size, and by llm): keep them
	// free of side effects.
	LLMOptions []func(*llm.Options)
}

// Stats tell what a [Load] did, as a timeline: each step's wall-clock
// time, zero for a step not reached.
type Stats struct {
	// Download is the download's: bytes, parts, retries, the checks that
	// passed (Verified), and durations from its start.
	Download s3load.Stats
	// Model is llama.cpp's load: whether it ran during the download
	// (Early), and when it started and ended.
	Model llm.EarlyStats

	Start     time.Time // Load was called
	FirstByte time.Time // the first response came
	LastByte  time.Time // the whole object was in memory, not yet verified
	Verified  time.Time // the download was verified
	Ready     time.Time // the model was handed out
}

// ReadyAfterLastByte is how long the model trailed its last byte: what was
// left of the checks and of llama.cpp's load once the link was done. A
// load during the download makes it a fraction of a second.
func (s Stats) ReadyAfterLastByte() time.Duration {
	if s.Ready.IsZero() || s.LastByte.IsZero() {
		return 0
	}
	return s.Ready.Sub(s.LastByte)
}

// LinkRate is the rate the link carried once the bytes flowed, first byte
// to last, in bytes per second; 0 if it cannot be told.
func (s Stats) LinkRate() float64 {
	flow := s.LastByte.Sub(s.FirstByte)
	if s.FirstByte.IsZero() || s.LastByte.IsZero() || flow <= 0 {
		return 0
	}
	return float64(s.Download.Size) / flow.Seconds()
}

// String summarises the cold start in one line.
func (s Stats) String() string {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Sub(s.Start).Round(time.Millisecond).String()
	}
	load := "after the download"
	switch {
	case s.Model.Early && s.Model.Gated:
		load = fmt.Sprintf("during the download, repacking as the bytes came (%d waits)", s.Model.Waits)
	case s.Model.Early:
		load = "during the download"
	}
	if s.Model.Fallback != "" {
		load += " (" + s.Model.Fallback + ")"
	}
	verified := s.Download.Verified
	if verified == "" {
		verified = "not verified"
	}
	return fmt.Sprintf("%s: %d bytes, first byte %s, last byte %s (%.1f MB/s), verified %s (%s), llama.cpp loaded %s, ready %s, %v after the last byte",
		s.Download.Object, s.Download.Size, at(s.FirstByte), at(s.LastByte), s.LinkRate()/1e6, at(s.Verified), verified,
		load, at(s.Ready), s.ReadyAfterLastByte().Round(time.Millisecond))
}

// Load downloads the model at uri (s3://bucket/key) with client into a
// memory file and loads it into llama.cpp, configured by optFns.
//
// llama.cpp's load starts during the download, as soon as the GGUF header
// is in, where the llm options allow it (see [llm.EarlyLoad]); otherwise
// once the download is verified. Either way the model is returned only
// once every byte is in place and verified, and a model loaded early from
// a download that then fails is closed unused. The memfd is closed before
// Load returns: the model keeps its mapped pages until [llm.Model.Close].
//
// Errors are the download's (matching s3load's sentinels, such as
// s3load.ErrNotFound or s3load.ErrChecksum), llm.ErrLibrary before any
// download if llama.cpp's libraries are unusable, llm.ErrInvalidModel for a
// file llama.cpp cannot load safely, or ctx's error if ctx ended first. Stats
// hold what was done, whatever the error.
func Load(ctx context.Context, client s3load.Client, uri string, optFns ...func(*Options)) (*llm.Model, Stats, error) {
	var o Options
	for _, fn := range optFns {
		fn(&o)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	llmOpts := append([]func(*llm.Options){func(lo *llm.Options) { lo.Logger = o.Logger }}, o.LLMOptions...)
	headroom := o.Headroom
	if headroom == 0 {
		var lo llm.Options
		for _, fn := range llmOpts {
			fn(&lo)
		}
		headroom = EstimateHeadroom(lo.ContextSize)
	}

	st := Stats{Start: time.Now()}
	// llama.cpp's libraries do not come with the model: if they are
	// unusable, say so now rather than after the download.
	if err := llm.CheckLibrary(llmOpts...); err != nil {
		return nil, st, err
	}
	early := llm.NewEarlyLoad(ctx, llmOpts...)
	dl := s3load.New(client, func(so *s3load.Options) {
		so.Logger = o.Logger
		so.SHA256 = o.SHA256
		so.Order = readOrder
		if headroom > 0 {
			so.MemfdOptions = append(so.MemfdOptions, func(m *memfd.Options) { m.Headroom = headroom })
		}
	})
	f, ds, err := dl.Load(ctx, uri, append(slices.Clip(o.S3Options), func(so *s3load.Options) {
		// Unsealed: llm gives back the memfd's pages of the weights
		// llama.cpp repacks, which the kernel refuses on a sealed memfd.
		// Nobody else holds the file, and it is closed after the load.
		so.NoSeal = true
		prev := so.OnPrefix
		so.OnPrefix = func(w io.WriterAt, n int64) {
			if prev != nil {
				prev(w, n)
			}
			early.Written(w, n)
		}
		// Parts fetched out of order (Order) let llama.cpp on past a
		// tensor as soon as its own bytes are in.
		prevPart := so.OnPart
		so.OnPart = func(w io.WriterAt, start, end int64) {
			if prevPart != nil {
				prevPart(w, start, end)
			}
			early.WrittenRange(w, start, end)
		}
		// The pages of weights llama.cpp repacked are given back once
		// s3load is done with them (with SHA256, hashed): during the
		// download, so the memory held stays near the model's size.
		prevRelease := so.OnRelease
		so.OnRelease = func(w io.WriterAt, n int64) {
			if prevRelease != nil {
				prevRelease(w, n)
			}
			early.Verified(n)
		}
	})...)
	st.Download = ds
	if ds.FirstByte > 0 {
		st.FirstByte = st.Start.Add(ds.FirstByte)
	}
	if ds.LastByte > 0 {
		st.LastByte = st.Start.Add(ds.LastByte)
	}
	if err == nil {
		st.Verified = st.Start.Add(ds.Elapsed)
		if o.OnVerified != nil {
			o.OnVerified()
		}
	}
	m, err := early.Finish(f, err)
	st.Model = early.Stats()
	if err != nil {
		return nil, st, err
	}
	st.Ready = time.Now()
	return m, st, nil
}

// readOrder asks for the tensors in the order llama.cpp loads them, once
// the GGUF header is in (s3load.Options.Order): a tensor the load wants
// early but the file holds late is then fetched early.
func readOrder(prefix io.ReaderAt, _, size int64) [][2]int64 {
	var magic [4]byte
	if _, err := prefix.ReadAt(magic[:], 0); err == nil && string(magic[:]) != "GGUF" {
		return [][2]int64{} // not a model: no order to ask for, and no more asking
	}
	ranges, err := llm.ReadOrder(prefix, size)
	if err != nil {
		return nil // the header is not all in yet (or is bad, which llama.cpp's load says)
	}
	return ranges
}

// EstimateHeadroom estimates the memory llama.cpp allocates besides the
// mapped model, for a context of contextSize tokens (0: llm's default,
// 4096): the KV cache (f16), the compute buffers and the repacked copies
// of weights not yet given back to the memfd, with the rest of the
// process. It is sized for models of the DeepSeek-R1-Distill-Qwen-1.5B
// class (28 layers, 2 KV heads of 128: 28 KiB per token of KV cache), with
// a margin: make bench-sizes measured a peak of 269 MiB over the model's
// 1063 MiB with a 4096-token context, and an OOM kill at 1328 MB where
// 256 MiB of headroom let the load start (BENCHMARKS.md). Larger models
// need more: set [Options.Headroom].
func EstimateHeadroom(contextSize int) int64 {
	if contextSize <= 0 {
		contextSize = 4096
	}
	const kvPerToken = 32 << 10 // bytes
	return 192<<20 + int64(contextSize)*kvPerToken
}
