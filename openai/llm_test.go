package openai

import (
	"os"
	"testing"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/llm/jsonschema"
)

// realConverter: the grammars enforce the schemas.
var realConverter = true

// grammars is the real converter.
func grammars() GrammarBuilder { return &jsonschema.Builder{} }

// wrap: *llm.Model is a Model.
func wrap(m *llm.Model) Model { return m }

// tinyModel writes a random-weight Qwen2 model with Qwen2.5's own chat
// template, which renders tools.
func tinyModel(t *testing.T) string {
	src, err := os.ReadFile("../llm/testdata/templates/Qwen-Qwen2.5-7B-Instruct.jinja")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testutil.TinyConfig("qwen2")
	cfg.Template = string(src)
	return testutil.TinyModelWith(t, cfg)
}
