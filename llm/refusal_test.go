package llm

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/memload/memload/internal/testutil"
)

// TestRefusalReason checks the reason taken from llama.cpp's log lines (as
// llama.cpp v0.5.0 logs a refusal) and how it is classified.
func TestRefusalReason(t *testing.T) {
	for _, tc := range []struct {
		lines   []string
		reason  string
		invalid bool
	}{
		{[]string{"llama_model_load: error loading model: check_tensor_dims: tensor 'blk.0.ffn_up.weight' not found",
			"llama_model_load_from_file_impl: failed to load model"}, "check_tensor_dims: tensor 'blk.0.ffn_up.weight' not found", true},
		{[]string{"llama_model_loader: unknown model architecture: 'qwen9'", "llama_model_load: error loading model: ",
			"llama_model_load_from_file_impl: failed to load model"}, "unknown model architecture: 'qwen9'", true},
		{[]string{"ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 1073741824",
			"llama_model_load_from_file_impl: failed to load model"}, "failed to allocate buffer of size 1073741824", false},
		{nil, "", false},
	} {
		r := newSession(slog.New(slog.DiscardHandler))
		r.line(slog.LevelDebug, "llama_model_loader: loaded meta data") // not kept
		for _, l := range tc.lines {
			r.line(slog.LevelError, l)
		}
		if got := r.reason(); got != tc.reason {
			t.Errorf("reason %q, want %q", got, tc.reason)
		}
		err := r.refused("m.gguf", "could not load", errors.New("failed to load model"))
		if errors.Is(err, ErrInvalidModel) != tc.invalid || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("refused: %v, want invalid %v", err, tc.invalid)
		}
	}
}

// TestRefusalsClassified loads, in this process, damaged models that
// llama.cpp refuses (or loads and cannot run) without crashing: each error
// matches ErrInvalidModel and carries the reason.
func TestRefusalsClassified(t *testing.T) {
	want := map[string]string{
		"tensors/missing-blk.0.ffn_up.weight":  "tensor 'blk.0.ffn_up.weight' not found",
		"metadata/general.file_type-as-string": "key general.file_type has wrong type str but expected type u32",
		"vocab/pre=\"bogus\"":                  "unknown pre-tokenizer type: 'bogus'",
		// The tokenizer reads a gpt2 vocabulary as RWKV's: loaded, then
		// caught by the warm-up.
		"vocab/model=\"rwkv\"": "gives token -1",
	}
	cs, err := testutil.Corruptions(testutil.CorruptConfig("qwen2"), 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	found := 0
	for _, c := range cs {
		part, ok := want[c.Name]
		if !ok {
			continue
		}
		found++
		t.Run(c.Name, func(t *testing.T) {
			path := filepath.Join(dir, "m.gguf")
			if err := os.WriteFile(path, c.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(context.Background(), path, testOptions)
			if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), part) {
				t.Errorf("Load: %v, want ErrInvalidModel mentioning %q", err, part)
			}
		})
	}
	if found != len(want) {
		t.Errorf("%d of the %d corruptions named here exist", found, len(want))
	}
}

// TestUnknownArchitectureLogged: a model of an architecture the GGUF check
// knows only in part is checked with the generic rules, and the log says so
// (llama.cpp then refuses this one: it knows no "qwen9").
func TestUnknownArchitectureLogged(t *testing.T) {
	good, err := testutil.EncodeModel(testutil.TinyConfig("qwen2"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "qwen9.gguf")
	if err := os.WriteFile(path, bytes.ReplaceAll(good, []byte("qwen2"), []byte("qwen9")), 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logged []slog.Record
	h := &recordHandler{fn: func(r slog.Record) { mu.Lock(); logged = append(logged, r); mu.Unlock() }}
	_, err = Load(context.Background(), path, testOptions, func(o *Options) { o.Logger = slog.New(h) })
	if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), "qwen9") {
		t.Errorf("Load: %v, want llama.cpp's refusal", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.ContainsFunc(logged, func(r slog.Record) bool {
		return strings.Contains(r.Message, "not one the GGUF check knows in full")
	}) {
		t.Error("no log line says the check was generic")
	}
}
