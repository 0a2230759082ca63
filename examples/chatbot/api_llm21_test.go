//go:build llm21

package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/memload/memload/internal/testutil"
)

// toolServer serves a random-weight Qwen2 model with Qwen2.5's own chat
// template, which renders tools, under the name the recordings use.
func toolServer(t *testing.T) *testServer {
	t.Helper()
	src, err := os.ReadFile("../../llm/testdata/templates/Qwen-Qwen2.5-7B-Instruct.jinja")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testutil.TinyConfig("qwen2")
	cfg.Template = string(src)
	path := filepath.Join(t.TempDir(), "tiny-qwen2.5-tools.gguf")
	if err := testutil.WriteModel(path, cfg); err != nil {
		t.Fatal(err)
	}
	return newTestServer(t, testConfig(t, map[string]string{"MODEL_URI": path, "MODEL_NAME": "memload-test", "MAX_TOKENS": "300"}))
}
