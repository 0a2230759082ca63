package llm

import (
	"context"
	"os"
	"slices"
	"testing"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm/internal/gguf"
)

// TestGiveBack is the safety proof for giving back the memfd's pages of
// repacked tensors: with random weights, any page llama.cpp still reads
// that were zeroed would change the greedy answer. It runs with the best
// CPU variant here, and in a child process with only the AVX2 (haswell)
// variant present, whose repacking differs (CPU_REPACK rather than AMX).
func TestGiveBack(t *testing.T) {
	if v := os.Getenv("MEMLOAD_TEST_VARIANT"); v != "" {
		testGiveBack(t, v)
		return
	}
	lib, err := openLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("best variant", func(t *testing.T) { testGiveBack(t, lib.variant) })
	t.Run("haswell", func(t *testing.T) { runWithVariant(t, lib, "haswell", "TestGiveBack") })
}

func testGiveBack(t *testing.T, variant string) {
	lib, err := openLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	if lib.variant != variant {
		t.Fatalf("llama.cpp picked %s, want %s", lib.variant, variant)
	}
	for _, arch := range []string{"qwen2", "llama"} {
		t.Run(arch, func(t *testing.T) {
			cfg := testutil.TinyConfig(arch)
			cfg.Quant, cfg.Embedding, cfg.FeedForward = testutil.Q4KM, 256, 512
			path := testutil.TinyModelWith(t, cfg)

			load := func(opt func(*Options)) (*Model, transcript) {
				f := memfdCopy(t, path)
				m, err := LoadFile(context.Background(), f, testOptions, opt)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close() })
				return m, chat(t, m, hello, greedy(24))
			}
			kept, want := load(func(o *Options) { o.KeepRepacked = true })
			given, got := load(func(*Options) {})
			pages, same := load(func(o *Options) { o.KeepPages = true })
			if kept.GivenBack() != 0 {
				t.Errorf("%s: KeepRepacked gave back %d bytes", variant, kept.GivenBack())
			}
			if pages.GivenBack() != 0 || pages.kvGiven != 0 || !slices.Equal(same.tokens, want.tokens) {
				t.Errorf("%s: KeepPages gave back %d bytes of the memfd, %d of the KV cache, answered %v (want %v)",
					variant, pages.GivenBack(), pages.kvGiven, same.tokens, want.tokens)
			}
			fi, _ := os.Stat(path)
			t.Logf("%s %s: %d of %d bytes given back", variant, arch, given.GivenBack(), fi.Size())
			if given.GivenBack() < fi.Size()/4 {
				t.Errorf("only %d of %d bytes given back", given.GivenBack(), fi.Size())
			}
			if len(want.tokens) < 8 || !slices.Equal(got.tokens, want.tokens) {
				t.Errorf("%s: with the pages given back %v, kept %v", variant, got.tokens, want.tokens)
			}
		})
	}
	t.Run("sealed", func(t *testing.T) {
		// A sealed memfd cannot give pages back: the load works, and keeps them.
		f := memfdCopy(t, testutil.TinyModelWith(t, func() testutil.ModelConfig {
			cfg := testutil.TinyConfig("qwen2")
			cfg.Quant, cfg.Embedding, cfg.FeedForward = testutil.Q4KM, 256, 512
			return cfg
		}()))
		if err := f.Seal(); err != nil {
			t.Fatal(err)
		}
		m, err := LoadFile(context.Background(), f, testOptions)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if m.GivenBack() != 0 {
			t.Errorf("sealed memfd: %d bytes given back", m.GivenBack())
		}
	})
	t.Run("control", func(t *testing.T) {
		// The comparison can see a zeroed page in use: zeroing the pages of
		// a tensor llama.cpp left in the mapping changes the answer.
		cfg := testutil.TinyConfig("qwen2")
		cfg.Quant, cfg.Embedding, cfg.FeedForward = testutil.Q4KM, 256, 512
		path := testutil.TinyModelWith(t, cfg)
		f := memfdCopy(t, path)
		m, err := LoadFile(context.Background(), f, testOptions)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		want := chat(t, m, hello, greedy(24))
		h, err := gguf.Parse(f, f.Size())
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range h.Tensors {
			if ti.Name == "token_embd.weight" {
				off := h.DataOffset + int64(ti.Offset)
				if err := f.PunchHole(off, int64(ti.Bytes)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := chat(t, m, hello, greedy(24)); slices.Equal(got.tokens, want.tokens) {
			t.Errorf("zeroing token_embd.weight left the answer %v unchanged", got.tokens)
		}
	})
}

// TestGiveBackTied loads a model with tied embeddings: llama.cpp uses
// token_embd.weight by row from the mapping and, repacked, as the output
// matrix, and announces its repacking. Its pages must stay: the answers
// with pages given back are those with every page kept.
func TestGiveBackTied(t *testing.T) {
	cfg := testutil.TinyConfig("qwen2")
	cfg.Quant, cfg.Embedding, cfg.FeedForward = testutil.Q4KM, 256, 512
	path := testutil.TiedModelWith(t, cfg)
	load := func(opt func(*Options)) transcript {
		m, err := LoadFile(context.Background(), memfdCopy(t, path), testOptions, opt)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		return chat(t, m, hello, greedy(24))
	}
	want := load(func(o *Options) { o.KeepPages = true })
	if got := load(func(*Options) {}); len(want.tokens) < 8 || !slices.Equal(got.tokens, want.tokens) {
		t.Errorf("with the pages given back %v, kept %v", got.tokens, want.tokens)
	}
}
