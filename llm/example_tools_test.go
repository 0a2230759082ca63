package llm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
)

// qwenModel writes a tiny random-weight model carrying Qwen2.5-Instruct's
// chat template, which renders tools.
func qwenModel() (path string, cleanup func()) {
	src, err := os.ReadFile(filepath.Join("testdata", "templates", "Qwen-Qwen2.5-7B-Instruct.jinja"))
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "llm-example")
	if err != nil {
		log.Fatal(err)
	}
	cfg := testutil.TinyConfig("qwen2")
	cfg.Template = string(src)
	path = filepath.Join(dir, "qwen.gguf")
	if err := testutil.WriteModel(path, cfg); err != nil {
		log.Fatal(err)
	}
	return path, func() { os.RemoveAll(dir) }
}

// Tools go to the model through its own chat template; its calls and
// their results come back as messages. The grammar is lazy: it applies
// once the model opens a call (Qwen's "<tool_call>"), so that a call
// always parses, while the model is free to answer in prose instead.
func ExampleChatOptions_tools() {
	path, cleanup := qwenModel()
	defer cleanup()
	ctx := context.Background()
	m, err := llm.Load(ctx, path, func(o *llm.Options) { o.Threads = 1 })
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	fmt.Println("template:", m.Template(), "renders tools:", m.RendersTools())

	weather := llm.Tool{
		Name:        "get_weather",
		Description: "Get the current weather in a city.",
		Parameters:  json.RawMessage(`{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}`),
	}
	msgs := []llm.Message{
		{Role: llm.RoleUser, Content: "Weather in Paris?"},
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "call1", Name: "get_weather", Arguments: `{"city": "Paris"}`}}},
		{Role: llm.RoleTool, ToolCallID: "call1", Content: `{"temperature": 21}`},
	}
	st, err := m.Chat(ctx, msgs, nil, func(o *llm.ChatOptions) {
		o.MaxTokens, o.Temperature = 8, 0
		o.Tools = []llm.Tool{weather}
		o.Grammar = `root ::= "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"" [A-Za-z ]+ "\"}}\n</tool_call>"`
		o.GrammarTriggers = []string{`<tool_call>`}
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("finish:", st.FinishReason)
	// Output:
	// template: chatml renders tools: true
	// finish: length
}

// OnLogprob sees each token, with the most likely alternatives, before
// its text is streamed.
func ExampleChatOptions_logprobs() {
	path, cleanup := tinyModel()
	defer cleanup()
	ctx := context.Background()
	m, err := llm.Load(ctx, path, func(o *llm.Options) { o.Threads = 1 })
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	var text strings.Builder
	var tokens []llm.TokenLogprob
	_, err = m.Chat(ctx, []llm.Message{{Role: llm.RoleUser, Content: "Hi"}},
		func(piece string) error { text.WriteString(piece); return nil },
		func(o *llm.ChatOptions) {
			o.MaxTokens, o.Temperature = 4, 0
			o.TopLogprobs = 3
			o.OnLogprob = func(lp llm.TokenLogprob) error { tokens = append(tokens, lp); return nil }
		})
	if err != nil {
		log.Fatal(err)
	}
	for _, lp := range tokens {
		// Greedy: each token is the most likely one.
		fmt.Println(len(lp.Top), lp.Token == lp.Top[0].Token, lp.Logprob <= 0)
	}
	// Output:
	// 3 true true
	// 3 true true
	// 3 true true
	// 3 true true
}
