package llm

import (
	"errors"
	"fmt"
	"io"

	"github.com/memload/memload/llm/internal/gguf"
)

// HeaderSize checks the GGUF header at the start of r, a model file of size
// bytes, and returns its length: where the tensor data starts. It reads the
// header and at most 64 KiB past it, nothing else, so r may be a file still
// being written whose reads wait for their bytes. llama.cpp, mapping a
// model without repacking it ([Options.NoRepack]), reads no more than the
// header while it loads: the weights are read when the model computes. A
// file that is not a GGUF model gives an error matching [ErrInvalidModel].
func HeaderSize(r io.ReaderAt, size int64) (int64, error) {
	h, err := gguf.Parse(r, size)
	if err != nil {
		if errors.Is(err, gguf.ErrFormat) {
			return 0, fmt.Errorf("%w: %w", ErrInvalidModel, err)
		}
		return 0, fmt.Errorf("llm: read the GGUF header: %w", err)
	}
	return h.DataOffset, nil
}
