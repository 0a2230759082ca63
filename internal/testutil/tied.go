package testutil

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"
)

// TiedModelWith writes the model cfg describes, less its output.weight,
// into a temporary directory of tb and returns its path. llama.cpp then
// computes the output from token_embd.weight, as for the published
// models with tied embeddings (Qwen2.5 0.5B to 3B, Llama 3.2 1B and 3B):
// one tensor of the file used twice, by row from the mapping for the
// input, and (repacked, if its type is) as the output matrix.
func TiedModelWith(tb testing.TB, cfg ModelConfig) string {
	tb.Helper()
	if err := cfg.check(); err != nil {
		tb.Fatal(err)
	}
	var ts []tensor
	for _, t := range cfg.tensors() {
		if t.name != "output.weight" {
			ts = append(ts, t)
		}
	}
	path := filepath.Join(tb.TempDir(), cfg.Arch+"-tied.gguf")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	if err := writeGGUF(w, cfg.metadata(), ts); err != nil {
		tb.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	return path
}
