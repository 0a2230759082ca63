package main

import (
	"context"
	"encoding/json"
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

// TestNULRoundTrip is issue 21's chat page bug: an answer holding a NUL
// byte (the byte token 0, forced by logit_bias) comes back in the next
// turn and is answered, not refused.
func TestNULRoundTrip(t *testing.T) {
	ts := newTestServer(t, testConfig(t, nil))
	resp := post(t, context.Background(), ts.url, `{"messages":[{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":3,"logit_bias":{"0":100}}`)
	a := decode[chatResponse](t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || a.Choices[0].Message.Content != "\x00\x00\x00" {
		t.Fatalf("%s %q", resp.Status, a.Choices[0].Message.Content)
	}
	turn2, _ := json.Marshal(map[string]any{"max_tokens": 3, "messages": []map[string]string{
		{"role": "user", "content": "Hi"}, {"role": "assistant", "content": a.Choices[0].Message.Content}, {"role": "user", "content": "Again"}}})
	resp = post(t, context.Background(), ts.url, string(turn2))
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		e := decode[struct{ Error apiError }](t, resp.Body)
		t.Fatalf("the answer sent back: %s %+v", resp.Status, e.Error)
	}
}
