package llm_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"testing"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/llm/internal/gguf"
)

// TestReadOrder checks the ranges of a generated model against the order
// in which llama.cpp's load_tensors creates the tensors of qwen2 and llama
// (src/llama-model.cpp): the tensors outside the layers, then each layer's
// attention weights, their biases, and the feed-forward network as gate,
// down, up; the generator writes them in another order (biases last, up
// before down). Every tensor byte is in exactly one range.
func TestReadOrder(t *testing.T) {
	for _, arch := range []string{"qwen2", "llama"} {
		t.Run(arch, func(t *testing.T) {
			data, err := os.ReadFile(testutil.TinyModel(t, arch))
			if err != nil {
				t.Fatal(err)
			}
			size := int64(len(data))
			ranges, err := llm.ReadOrder(bytes.NewReader(data), size)
			if err != nil {
				t.Fatal(err)
			}
			h, err := gguf.Parse(bytes.NewReader(data), size)
			if err != nil {
				t.Fatal(err)
			}
			// The tensors in the order the ranges give them.
			var got []string
			var covered int64
			for _, r := range ranges {
				covered += r[1] - r[0]
				var in []gguf.TensorInfo
				for _, ti := range h.Tensors {
					if start := h.DataOffset + int64(ti.Offset); start >= r[0] && start+int64(ti.Bytes) <= r[1] {
						in = append(in, ti)
					}
				}
				slices.SortFunc(in, func(a, b gguf.TensorInfo) int { return int(a.Offset) - int(b.Offset) })
				for _, ti := range in {
					got = append(got, ti.Name)
				}
			}
			want := []string{"token_embd.weight", "output_norm.weight", "output.weight"}
			for i := range testutil.TinyConfig(arch).Layers {
				p := fmt.Sprintf("blk.%d.", i)
				want = append(want, p+"attn_norm.weight", p+"attn_q.weight", p+"attn_k.weight", p+"attn_v.weight", p+"attn_output.weight")
				if arch == "qwen2" {
					want = append(want, p+"attn_q.bias", p+"attn_k.bias", p+"attn_v.bias")
				}
				want = append(want, p+"ffn_norm.weight", p+"ffn_gate.weight", p+"ffn_down.weight", p+"ffn_up.weight")
			}
			if !slices.Equal(got, want) {
				t.Errorf("tensors in the order\n%v\nwant\n%v", got, want)
			}
			var bytesOfTensors int64
			for _, ti := range h.Tensors {
				bytesOfTensors += int64(ti.Bytes)
			}
			if covered != bytesOfTensors {
				t.Errorf("the ranges cover %d bytes, the tensors hold %d", covered, bytesOfTensors)
			}
			for i := 1; i < len(ranges); i++ {
				if ranges[i-1][1] == ranges[i][0] {
					t.Errorf("ranges %v and %v touch: they should be joined", ranges[i-1], ranges[i])
				}
			}
		})
	}
}

// TestReadOrderBadInput checks that a file that is not a model is refused
// as one, and that a header not yet all in place gives an error, not a
// partial order.
func TestReadOrderBadInput(t *testing.T) {
	data, err := os.ReadFile(testutil.TinyModel(t, "qwen2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := llm.ReadOrder(bytes.NewReader(testutil.RandomBytes(4096, 3)), 4096); !errors.Is(err, llm.ErrInvalidModel) {
		t.Errorf("random bytes: err = %v, want ErrInvalidModel", err)
	}
	hs, err := llm.HeaderSize(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	// Reads past the first hs/2 bytes fail, as s3load's prefix reader's do.
	half := io.NewSectionReader(bytes.NewReader(data), 0, hs/2)
	if r, err := llm.ReadOrder(half, int64(len(data))); err == nil || r != nil {
		t.Errorf("half the header: %v, %v; want an error", r, err)
	}
}

// ExampleReadOrder gives the byte ranges of a model's tensors in the order
// llama.cpp loads them, for a download to fetch in that order
// (s3load.Options.Order; memload.Load does).
func ExampleReadOrder() {
	path, cleanup := tinyModel()
	defer cleanup()
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		log.Fatal(err)
	}
	ranges, err := llm.ReadOrder(f, fi.Size())
	if err != nil {
		log.Fatal(err)
	}
	header, err := llm.HeaderSize(f, fi.Size())
	if err != nil {
		log.Fatal(err)
	}
	// token_embd comes first, right after the header.
	fmt.Println(ranges[0][0] == header, ranges[len(ranges)-1][1] <= fi.Size())
	// Output: true true
}
