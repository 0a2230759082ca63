package memload_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload"
	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/s3load"
)

// TestLoadBenchModel measures how long after the last byte the 1.5B model
// of testutil.BenchModel is ready through memload.Load, with repacking on
// and off, against a download followed by llm.LoadFile, over a shaped
// link (MEMLOAD_EARLY_LINK, default lambda-like), with the SHA-256
// checked. It runs only when asked, on a model already generated:
//
//	MEMLOAD_EARLY_BENCH=1 go test -count=1 -run TestLoadBenchModel -v .
//
// make bench-coldstart measures the same over every shape, in rounds.
func TestLoadBenchModel(t *testing.T) {
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
	sha := sha256Hex(model)
	m := testutil.NewMinIO(t)
	if err := m.CreateBucket(ctx, "models"); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(ctx, "models", "bench.gguf", model); err != nil {
		t.Fatal(err)
	}
	size := int64(len(model))
	model = nil
	name := cmp(os.Getenv("MEMLOAD_EARLY_LINK"), "lambda-like")
	link, err := testutil.LinkNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	opts := func(repack bool) func(*llm.Options) {
		return func(o *llm.Options) { o.Threads, o.ContextSize, o.NoRepack, o.Logger = 1, 1024, !repack, quiet }
	}

	var table strings.Builder
	fmt.Fprintf(&table, "%s, %d bytes, SHA-256 checked, 1 thread; busy machines make these figures noisy\n", link, size)
	fmt.Fprintf(&table, "| load | repack | download | llama.cpp load | during the download | last byte → ready |\n|---|---|---:|---:|---|---:|\n")
	for _, c := range []struct {
		memload, repack bool
	}{{true, false}, {true, true}, {false, true}} {
		shaper := testutil.NewShaper(t, m.Endpoint, link)
		client := m.Client(func(o *s3.Options) { o.BaseEndpoint = aws.String(shaper.URL) })
		var st memload.Stats
		var mod *llm.Model
		if c.memload {
			mod, st, err = memload.Load(ctx, client, "s3://models/bench.gguf", func(o *memload.Options) {
				o.SHA256 = sha
				o.LLMOptions = append(o.LLMOptions, opts(c.repack))
			})
		} else {
			st.Start = time.Now()
			f, ds, derr := s3load.New(client, func(o *s3load.Options) { o.SHA256, o.NoSeal = sha, true }).Load(ctx, "s3://models/bench.gguf")
			if derr != nil {
				t.Fatal(derr)
			}
			st.Download, st.LastByte = ds, st.Start.Add(ds.LastByte)
			st.Model.Start = time.Now()
			mod, err = llm.LoadFile(ctx, f, opts(c.repack), func(o *llm.Options) { o.CloseFile = true })
			st.Model.End, st.Ready = time.Now(), time.Now()
		}
		if err != nil {
			t.Fatal(err)
		}
		mod.Close()
		shaper.Close()
		how := "download, then llm.LoadFile"
		if c.memload {
			how = "memload.Load"
		}
		fmt.Fprintf(&table, "| %s | %v | %.2f s | %.2f s | %v | %.0f ms |\n", how, c.repack,
			st.Download.LastByte.Seconds(), st.Model.End.Sub(st.Model.Start).Seconds(), st.Model.Early,
			float64(st.ReadyAfterLastByte().Microseconds())/1000)
	}
	t.Log("\n" + table.String())
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
