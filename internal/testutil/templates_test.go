package testutil

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestPublishedTemplate(t *testing.T) {
	for _, name := range []string{Qwen25File, Qwen3File, Llama31File, DeepSeekR1File, MistralNemoFile} {
		src := PublishedTemplate(t, name)
		if !strings.Contains(src, "messages") {
			t.Errorf("%s: not a chat template: %.80q", name, src)
		}
		cfg := TinyConfig("qwen2")
		cfg.Template = src
		if err := WriteModel(filepath.Join(t.TempDir(), "m.gguf"), cfg); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
