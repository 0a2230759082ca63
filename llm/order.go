package llm

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/memload/memload/llm/internal/gguf"
)

// ReadOrder returns the byte ranges [start, end) of the tensors of r, a
// GGUF model of size bytes, in the order llama.cpp LibraryVersion loads
// them: the tensors outside the layers first (token_embd, output_norm,
// output, then any other), then layer by layer, each layer's as the model
// code creates them (attention, then feed-forward). llama.cpp reads a
// tensor it repacks exactly when it loads it, so a download that fetches
// in this order (s3load.Options.Order) has the first tensors in place
// first even where the file holds them late. Adjacent ranges are joined.
// It reads only the header, as [HeaderSize] does; a file that is not a
// GGUF model gives an error matching [ErrInvalidModel].
func ReadOrder(r io.ReaderAt, size int64) ([][2]int64, error) {
	h, err := gguf.Parse(r, size)
	if err != nil {
		if errors.Is(err, gguf.ErrFormat) {
			return nil, fmt.Errorf("%w: %w", ErrInvalidModel, err)
		}
		return nil, fmt.Errorf("llm: read the GGUF header: %w", err)
	}
	ts := slices.Clone(h.Tensors)
	slices.SortStableFunc(ts, func(a, b gguf.TensorInfo) int {
		la, ra := loadRank(a.Name)
		lb, rb := loadRank(b.Name)
		return cmp.Or(cmp.Compare(la, lb), cmp.Compare(ra, rb))
	})
	var ranges [][2]int64
	for _, t := range ts {
		start := h.DataOffset + int64(min(t.Offset, uint64(size)))
		end := min(start+int64(min(t.Bytes, uint64(size))), size)
		if start >= end {
			continue
		}
		if n := len(ranges); n > 0 && ranges[n-1][1] == start {
			ranges[n-1][1] = end
			continue
		}
		ranges = append(ranges, [2]int64{start, end})
	}
	return ranges, nil
}

// loadRank places a tensor in llama.cpp's load order (src/llama-model.cpp,
// load_tensors, for the llama and qwen2 families): its layer, -1 outside
// the layers, and its place in the layer. Names it does not know come
// after the known ones of their layer, in the file's order.
func loadRank(name string) (layer, rank int) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		for i, n := range []string{"token_embd.", "output_norm.", "output."} {
			if strings.HasPrefix(name, n) {
				return -1, i
			}
		}
		return -1, 3
	}
	num, tensor, _ := strings.Cut(rest, ".")
	layer, err := strconv.Atoi(num)
	if err != nil || layer < 0 {
		return 1 << 30, 0
	}
	// Attention weights, then their biases (qwen2 creates bq, bk and bv
	// after wo), then the feed-forward network.
	for i, n := range []string{
		"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
		"attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias",
		"ffn_norm.weight", "ffn_gate.weight", "ffn_down.weight", "ffn_up.weight",
	} {
		if tensor == n {
			return layer, i
		}
	}
	return layer, 100
}
