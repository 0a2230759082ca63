package gguf

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/memload/memload/internal/testutil"
)

func TestCheckValid(t *testing.T) {
	for _, cfg := range []testutil.ModelConfig{
		testutil.TinyConfig("qwen2"), testutil.TinyConfig("llama"), testutil.CorruptConfig("qwen2"),
		func() testutil.ModelConfig {
			c := testutil.TinyConfig("qwen2")
			c.Quant = testutil.Q4KM
			c.Embedding, c.FeedForward = 256, 512
			return c
		}(),
	} {
		b, err := testutil.EncodeModel(cfg)
		if err != nil {
			t.Fatal(err)
		}
		h, err := parse(b)
		if err != nil {
			t.Fatal(err)
		}
		full, err := h.Check()
		if err != nil || !full {
			t.Errorf("%s %v: Check = %v, %v; want a fully checked model", cfg.Arch, cfg.Quant, full, err)
		}
	}
}

func TestCheckUnknownArchitecture(t *testing.T) {
	b, _ := testutil.EncodeModel(testutil.TinyConfig("qwen2"))
	// "qwen2" in the metadata keys and the architecture both: the same model
	// under another name, whose keys the generic checks read.
	b = bytes.ReplaceAll(b, []byte("qwen2"), []byte("qwen9"))
	h, err := parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if full, err := h.Check(); full || err != nil {
		t.Errorf("Check = %v, %v; want the generic checks to pass, not in full", full, err)
	}
}

// TestCheckRefuses checks that Check refuses each damaged model that
// crashed llama.cpp v0.5.0 before it existed (TestCorruptModels in llm
// loads them all in child processes), naming what is wrong.
func TestCheckRefuses(t *testing.T) {
	want := map[string]string{ // corruption -> part of the error
		// A valid type where the graph cannot use it.
		"tensor-type/output_norm.weight=F16":     `"output_norm.weight" (256) is F16`,
		"tensor-type/blk.1.ffn_norm.weight=Q8_0": "only as F32",
		"tensor-type/blk.1.attn_v.bias=I32":      "only as F32",
		"tensor-type/blk.1.attn_v.bias=F64":      "only as F32",
		"tensor-type/blk.0.attn_k.weight=Q8_1":   "cannot multiply",
		"tensor-type/blk.1.ffn_down.weight=I16":  "cannot multiply",
		"tensor-type/output.weight=F64":          "cannot multiply",
		"tensor-type/token_embd.weight=I8":       `"token_embd.weight" (256×512) is I8`,
		"tensor-type/token_embd.weight=Q8_K":     "cannot multiply or look up",
		// Hyperparameters llama.cpp asserts on.
		"hparam/qwen2.block_count=0":                           "qwen2.block_count is 0",
		"hparam/qwen2.block_count=513":                         "1 to 512 layers",
		"hparam/qwen2.block_count=3":                           "layer 2 has no tensors",
		"hparam/qwen2.rope.dimension_count=32":                 "rope over 32",
		"hparam/qwen2.rope.dimension_count=63":                 "rope.dimension_count is 63",
		"hparam/qwen2.attention.key_length=128":                "128 wide for keys",
		"hparam/qwen2.attention.key_length=0":                  "key_length",
		"hparam/qwen2.expert_count=1":                          "expert_used_count is 0 or missing",
		"hparam/qwen2.expert_count=1024":                       "at most 512",
		"hparam/qwen2.expert_used_count=1":                     "expert_used_count is 1, expert_count 0",
		"hparam/expert_count=2,expert_used_count=4":            "no more experts used",
		"hparam/rope.scaling.type=\"bogus\"":                   `the string "bogus"`,
		"hparam/rope.scaling.type=\"\"":                        "rope.scaling.type",
		"hparam/attention.head_count_kv=[2 0]":                 "layer 1 has 4 attention heads and 0",
		"hparam/attention.head_count_kv=[2 -1]":                "head_count_kv[1] is -1",
		"hparam/qwen2.attention.layer_norm_rms_epsilon=NaN":    "layer_norm_rms_epsilon is NaN",
		"hparam/qwen2.attention.layer_norm_rms_epsilon=-1e-06": "finite, positive",
		"hparam/general.alignment=1":                           "at least 8",
		"hparam/general.alignment=4":                           "at least 8",
		"hparam/head_count_kv-float-array":                     "int32 or uint32",
		"metadata/qwen2.block_count-as-int32":                  "reads it as a uint32",
		// Data out of place.
		"layout/output_norm.weight-overlaps-previous": "one after the other",
		"layout/blk.0.attn_k.bias-gap":                "one after the other",
		"layout/swapped-data":                         "one after the other",
		// The vocabulary.
		"vocab/NUL-embedded-equal":  "reads up to its NUL",
		"vocab/duplicate":           "twice",
		"vocab/EMPTY-collides":      `"[EMPTY_300]" twice`,
		"vocab/model=\"llama\"":     "no byte token <0x00>",
		"vocab/model=\"bogus\"":     "llama.cpp knows gpt2",
		"vocab/one-more":            "token_type",
		"vocab/one-more-everywhere": "one row per token",
		"vocab/scores-len+1":        "one per token",
		"tensors/name-with-NUL":     "NUL byte",
		"tensors/extra-layer":       "in layer 2",
		"metadata/key-with-NUL":     "NUL byte",
	}
	cs, err := testutil.Corruptions(testutil.CorruptConfig("qwen2"), 1)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, c := range cs {
		part, ok := want[c.Name]
		if !ok {
			continue
		}
		found++
		t.Run(c.Name, func(t *testing.T) {
			h, err := parse(c.Bytes())
			if err == nil {
				_, err = h.Check()
			}
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
			if !strings.Contains(err.Error(), part) {
				t.Errorf("err = %q, want it to mention %q", err, part)
			}
		})
	}
	if found != len(want) {
		t.Errorf("%d of the %d corruptions named here exist", found, len(want))
	}
}

// headerReader is a file whose header is given and whose tensor data reads
// as zeros.
type headerReader []byte

func (h headerReader) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	if off < int64(len(h)) {
		copy(p, h[off:])
	}
	return len(p), nil
}

// BenchmarkCheck times the GGUF check of the benchmark model's shape
// (DeepSeek-R1-Distill-Qwen-1.5B: 28 layers, 151,936 tokens) beside the
// header parse it follows: go test -bench Check -run XXX ./llm/internal/gguf
func BenchmarkCheck(b *testing.B) {
	hdr, size, err := testutil.ModelHeader(testutil.BenchConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := Parse(headerReader(hdr), size); err != nil {
				b.Fatal(err)
			}
		}
	})
	h, err := Parse(headerReader(hdr), size)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if _, err := h.Check(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestCorruptionTypes checks that the corruptions' ggml types are the
// parser's, so that a type changed by a corruption has the size llama.cpp
// gives it.
func TestCorruptionTypes(t *testing.T) {
	want := map[uint32][3]any{}
	TensorTypes(func(id uint32, name string, block, bytes uint64) { want[id] = [3]any{name, block, bytes} })
	n := 0
	testutil.GGMLTypes(func(id uint32, name string, block, bytes uint64) {
		n++
		if got := [3]any{name, block, bytes}; want[id] != got {
			t.Errorf("type %d: testutil has %v, the parser %v", id, got, want[id])
		}
	})
	if n != len(want) {
		t.Errorf("testutil knows %d types, the parser %d", n, len(want))
	}
}
