package testutil

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVocabulary(t *testing.T) {
	tokens, types, merges := vocabulary(2000)
	if len(tokens) != 2000 || len(types) != 2000 {
		t.Fatalf("%d tokens, %d types", len(tokens), len(types))
	}
	index := map[string]bool{}
	for i, s := range tokens {
		if index[s] {
			t.Fatalf("token %d %q is not unique", i, s)
		}
		index[s] = true
	}
	// Every merge joins two tokens into a third, as BPE requires.
	for _, m := range merges {
		a, b, ok := strings.Cut(m, " ")
		if !ok || !index[a] || !index[b] || !index[a+b] {
			t.Fatalf("merge %q is not between tokens", m)
		}
	}
	// The newline's byte-level character, which llama.cpp looks up.
	if !index["Ċ"] || !index["Ġ"] {
		t.Error("byte tokens for newline and space are missing")
	}
	for _, s := range specialTokens {
		if !index[s.text] {
			t.Errorf("special token %q missing", s.text)
		}
	}
}

func TestF16(t *testing.T) {
	for v, want := range map[float32]uint16{1: 0x3c00, 0.5: 0x3800, 2: 0x4000, 0.0625: 0x2c00} {
		if got := f16(v); got != want {
			t.Errorf("f16(%g) = %#04x, want %#04x", v, got, want)
		}
	}
}

func TestWriteModelDeterministic(t *testing.T) {
	dir := t.TempDir()
	cfg := TinyConfig("qwen2")
	cfg.Quant, cfg.Embedding, cfg.FeedForward = Q4KM, 256, 512 // exercise the quantised path
	var files [2][]byte
	for i := range files {
		p := filepath.Join(dir, "m.gguf")
		if err := WriteModel(p, cfg); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[i] = b
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Error("the same configuration gave different files")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

// TestBenchConfigSize checks the 1.5B shape against the published
// DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf, about 1.12 GB, without
// writing it.
func TestBenchConfigSize(t *testing.T) {
	var n uint64
	for _, ts := range BenchConfig().tensors() {
		n += pad(ts.size())
	}
	if n < 1.10e9 || n > 1.13e9 {
		t.Errorf("tensor data of %d bytes, want about 1.12 GB", n)
	}
}

func TestWriteModelRejects(t *testing.T) {
	bad := TinyConfig("gpt9")
	if err := WriteModel(filepath.Join(t.TempDir(), "x.gguf"), bad); err == nil {
		t.Error("unknown architecture accepted")
	}
	bad = TinyConfig("llama")
	bad.Quant = Q4KM // n_embd 64 is not a multiple of 256
	if err := WriteModel(filepath.Join(t.TempDir(), "x.gguf"), bad); err == nil {
		t.Error("Q4_K with n_embd 64 accepted")
	}
}
