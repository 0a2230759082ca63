package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/s3load"
)

// TestEarlyLoadBenchModel measures how long after the last byte the 1.5B
// model of testutil.BenchModel is ready, loaded early and after the
// download, over the lambda-like link, with MODEL_SHA256 checked. It runs
// only when asked, on a model already generated:
//
//	MEMLOAD_EARLY_BENCH=1 go test -count=1 -run TestEarlyLoadBenchModel -v ./examples/chatbot
func TestEarlyLoadBenchModel(t *testing.T) {
	if os.Getenv("MEMLOAD_EARLY_BENCH") == "" {
		t.Skip("set MEMLOAD_EARLY_BENCH=1 to measure")
	}
	ctx := context.Background()
	path, err := testutil.BenchModel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	model, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(model)
	sha := hex.EncodeToString(sum[:])
	m := testutil.NewMinIO(t)
	createBucket(t, m, "models")
	if err := m.Put(ctx, "models", "bench.gguf", model); err != nil {
		t.Fatal(err)
	}
	size := int64(len(model))
	model = nil
	link, err := testutil.LinkNamed("lambda-like")
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	opts := func(repack bool) func(*llm.Options) {
		return func(o *llm.Options) { o.Threads, o.ContextSize, o.NoRepack, o.Logger = 1, 1024, !repack, quiet }
	}

	var table strings.Builder
	fmt.Fprintf(&table, "%s, %d bytes, SHA-256 checked, 1 thread\n", link, size)
	fmt.Fprintf(&table, "| start | repack | download | llama.cpp load | last byte → verified | last byte → ready |\n|---|---|---:|---:|---:|---:|\n")
	for _, c := range []struct {
		early, repack bool
	}{{true, false}, {false, false}, {false, true}} {
		shaper := testutil.NewShaper(t, m.Endpoint, link)
		client := m.Client(func(o *s3.Options) { o.BaseEndpoint = aws.String(shaper.URL) })
		var lastByte time.Time
		dl := s3load.New(client, func(o *s3load.Options) {
			o.SHA256, o.NoSeal = sha, true
			o.OnPrefix = func(w io.WriterAt, n int64) {
				if n == size {
					lastByte = time.Now()
				}
			}
		})
		start := time.Now()
		var mod *llm.Model
		var verified, llamaStart, llamaEnd time.Time
		if c.early {
			var res earlyLoad
			mod, res, err = loadEarly(ctx, dl, "s3://models/bench.gguf", nil, opts(c.repack))
			verified, llamaStart, llamaEnd = res.Verified, res.LlamaStart, res.LlamaEnd
			if err == nil && !res.Early {
				t.Fatal("not loaded early")
			}
		} else {
			f, _, derr := dl.Load(ctx, "s3://models/bench.gguf")
			if derr != nil {
				t.Fatal(derr)
			}
			verified, llamaStart = time.Now(), time.Now()
			mod, err = llm.LoadFile(ctx, f, opts(c.repack), func(o *llm.Options) { o.CloseFile = true })
			llamaEnd = time.Now()
		}
		ready := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		mod.Close()
		shaper.Close()
		when := "after the download"
		if c.early {
			when = "early"
		}
		fmt.Fprintf(&table, "| %s | %v | %.2f s | %.2f s | %.0f ms | %.0f ms |\n", when, c.repack,
			lastByte.Sub(start).Seconds(), llamaEnd.Sub(llamaStart).Seconds(),
			ms(verified.Sub(lastByte)), ms(ready.Sub(lastByte)))
	}
	t.Log("\n" + table.String())
}
