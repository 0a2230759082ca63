package openai

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
)

// loadTiny loads a generated random-weight Qwen2 model (ChatML family)
// into llama.cpp, or skips the test where the library is not installed.
func loadTiny(t *testing.T) *llm.Model {
	t.Helper()
	if os.Getenv(llm.LibraryEnv) == "" {
		if root, err := testutil.RepoRoot(); err == nil {
			platform := map[string]string{"amd64": "linux-x64", "arm64": "linux-arm64"}[runtime.GOARCH]
			t.Setenv(llm.LibraryEnv, filepath.Join(root, ".bin", "llama", platform))
		}
	}
	if _, err := os.Stat(filepath.Join(os.Getenv(llm.LibraryEnv), "libllama.so")); err != nil {
		t.Skipf("llama.cpp is not installed (make llama): %v", err)
	}
	m, err := llm.Load(context.Background(), tinyModel(t), func(o *llm.Options) { o.Threads, o.ContextSize = 1, 1024 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestGrammarsInLlama: the grammars this package composes are valid GBNF
// that llama.cpp enforces: with tool_choice "required", a random-weight
// model's every answer is a call of one of the tools that parses, streamed
// as deltas; with json_schema, a JSON object.
func TestGrammarsInLlama(t *testing.T) {
	m := loadTiny(t)
	if m.Template() != "chatml" {
		t.Fatalf("template %q", m.Template())
	}
	url := serve(t, wrap(m), func(h *Handler) { h.MaxTokens, h.Grammars = 200, grammars })
	finished := 0
	for seed := range 6 {
		body := fmt.Sprintf(`{"stream":true,"seed":%d,"temperature":1,"max_tokens":200,"messages":[{"role":"user","content":"Weather?"}],%s,"tool_choice":"required"}`, seed, weatherTools)
		code, out := ask(t, url, body)
		if code != 200 {
			t.Fatalf("%d %s", code, out)
		}
		args := map[int]string{}
		names := map[int]string{}
		var content strings.Builder
		finish := ""
		for _, c := range chunks(t, out) {
			if len(c.Choices) == 0 {
				continue
			}
			content.WriteString(c.Choices[0].Delta.Content)
			for _, d := range c.Choices[0].Delta.ToolCalls {
				if d.Function.Name != "" {
					names[*d.Index] = d.Function.Name
				}
				args[*d.Index] += d.Function.Arguments
			}
			if f := c.Choices[0].FinishReason; f != nil {
				finish = *f
			}
		}
		t.Logf("seed %d: %s, %d calls %v, content %q", seed, finish, len(names), names, content.String())
		if finish == "length" {
			continue // a prefix of a call
		}
		finished++
		if finish != "tool_calls" || len(names) == 0 || content.Len() > 0 {
			t.Errorf("seed %d: finish %q, calls %v, content %q", seed, finish, names, content.String())
		}
		for i, name := range names {
			var v map[string]any
			if !toolNames[name] || json.Unmarshal([]byte(args[i]), &v) != nil {
				t.Errorf("seed %d: call %s(%s)", seed, name, args[i])
			}
			if _, ok := v["city"].(string); realConverter && name == "get_weather" && !ok {
				t.Errorf("seed %d: get_weather(%s) has no city", seed, args[i])
			}
		}
	}
	t.Logf("%d of 6 answers finished within 200 tokens", finished)
	if finished == 0 {
		t.Error("no answer finished: nothing shows that a whole call parses")
	}

	for seed := range 4 {
		body := fmt.Sprintf(`{"seed":%d,"temperature":1,"max_tokens":200,"messages":[{"role":"user","content":"JSON"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}`, seed)
		code, out := ask(t, url, body)
		var a chatResponse
		if err := json.Unmarshal([]byte(out), &a); code != 200 || err != nil {
			t.Fatalf("%d %s", code, out)
		}
		var v map[string]any
		if text := *a.Choices[0].Message.Content; *a.Choices[0].FinishReason == "stop" && json.Unmarshal([]byte(text), &v) != nil {
			t.Errorf("seed %d: %q is not a JSON object", seed, text)
		}
	}
}
