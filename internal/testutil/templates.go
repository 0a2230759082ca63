package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// Names of published chat templates in llm/testdata/templates (their
// sources and licences are in its README), for [PublishedTemplate]: a tiny
// model with one of them as its [ModelConfig.Template] is rendered by llm's
// Jinja engine as the real model is.
const (
	Qwen25File      = "Qwen-Qwen2.5-7B-Instruct"                 // tools; calls in <tool_call> tags
	Qwen3File       = "Qwen-Qwen3-8B"                            // tools; calls in <tool_call> tags
	Llama31File     = "meta-llama-Llama-3.1-8B-Instruct"         // tools; calls as JSON
	DeepSeekR1File  = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B" // calls between DeepSeek's tool tokens
	MistralNemoFile = "mistralai-Mistral-Nemo-Instruct-2407"     // tools; [TOOL_CALLS]
)

// PublishedTemplate returns the published chat template name: one of
// [Qwen25File] and the others, or another file's name without ".jinja".
func PublishedTemplate(tb testing.TB, name string) string {
	tb.Helper()
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "llm", "testdata", "templates", name+".jinja"))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
