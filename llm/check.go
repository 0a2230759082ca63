package llm

import (
	"fmt"
	"log/slog"

	"github.com/memload/memload/llm/internal/gguf"
)

// checkModel checks what llama.cpp will assume of the model h describes,
// before it sees the file (see gguf's Check), and logs when the
// architecture is one the check knows only in part.
func checkModel(path string, h *gguf.Header, logger *slog.Logger) error {
	full, err := h.Check()
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrInvalidModel, path, err)
	}
	if !full {
		arch, _ := h.String("general.architecture")
		logger.Info("llm: the model's architecture is not one the GGUF check knows in full: only the checks that hold for every architecture were made",
			"path", path, "arch", arch, "fully checked", gguf.FullyChecked)
	}
	return nil
}
