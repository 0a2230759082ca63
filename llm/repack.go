package llm

import (
	"github.com/memload/memload/llm/internal/gguf"
	"github.com/memload/memload/memfd"
)

type repackLog struct{}

func recordRepack() *repackLog { return &repackLog{} }

func (r *repackLog) stop() {}

func (m *Model) giveBack(f *memfd.File, h *gguf.Header, rec *repackLog) error { return nil }
