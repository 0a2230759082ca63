package main

// Loading the model while it downloads: llm.EarlyLoad follows s3load's
// download in the memfd and, without repacking, starts llama.cpp's load as
// soon as the GGUF header is in place (llm/early.go). With repacking (or
// NoMmap), llama.cpp reads every weight during its load, so the load must
// wait for the last byte: on the 1.5B model it then ends about 1.0-1.1 s
// after it, at one thread. Without repacking the load takes 0.45 s, all of
// it under the download, and the memory is the same (the memfd's pages of
// repacked weights are given back otherwise), but prompts are slower:
// 20 against 29 tok/s with AVX2, 21 against 74 with AMX (BENCHMARKS.md,
// bench-llm); generation is memory-bound and the same.

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/memload/memload/llm"
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
// into llama.cpp configured by llmOpts, through an llm.EarlyLoad: with
// NoRepack set and NoMmap not, llama.cpp's load starts as soon as the
// model's GGUF header is in place; otherwise, or if the object changed and
// the download started over (RestartOnChange), once the download is
// verified. Either way the model is returned only after every byte is in
// place and verified, and if the download fails, a model loaded early is
// closed unused. verified, if not nil, is called once the download is
// verified, before what is left of llama.cpp's load. The memfd is closed
// before loadEarly returns: a mapped model keeps its pages.
func loadEarly(ctx context.Context, dl *s3load.Loader, uri string, verified func(), llmOpts ...func(*llm.Options)) (*llm.Model, earlyLoad, error) {
	el := llm.NewEarlyLoad(ctx, llmOpts...)
	var mu sync.Mutex
	var lastByte time.Time
	f, st, err := dl.Load(ctx, uri, func(so *s3load.Options) {
		prev := so.OnPrefix
		so.OnPrefix = func(w io.WriterAt, n int64) {
			if prev != nil {
				prev(w, n)
			}
			if sized, ok := w.(interface{ Size() int64 }); ok && n == sized.Size() {
				mu.Lock()
				lastByte = time.Now()
				mu.Unlock()
			}
			el.Written(w, n)
		}
	})
	res := earlyLoad{Stats: st, Verified: time.Now()}
	if err == nil && verified != nil {
		verified()
	}
	m, err := el.Finish(f, err)
	es := el.Stats()
	mu.Lock()
	res.LastByte = lastByte
	mu.Unlock()
	res.Early, res.LlamaStart, res.LlamaEnd = es.Early, es.Start, es.End
	return m, res, err
}
