// Command loadchild loads a model with llm.Load and chats 4 greedy tokens
// with it, for llm's tests of damaged models (TestCorruptModels,
// FuzzLoad): they run it in a child process, so that a crash inside
// llama.cpp fails a test instead of ending it. It prints what happened as
// one line of JSON, and llama.cpp's warnings and errors on stderr.
//
// Usage: loadchild model.gguf
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/memload/memload/llm"
)

// Result is what the child prints.
type Result struct {
	LoadErr string `json:"load_err,omitempty"`
	Invalid bool   `json:"invalid,omitempty"` // LoadErr matches llm.ErrInvalidModel or llm.ErrUnknownTemplate
	ChatErr string `json:"chat_err,omitempty"`
	Full    bool   `json:"full,omitempty"` // ChatErr matches llm.ErrContextFull: the model's training context is tiny
	Answer  string `json:"answer,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: loadchild model.gguf")
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var r Result
	m, err := llm.Load(context.Background(), os.Args[1], func(o *llm.Options) { o.Threads = 1; o.ContextSize = 256; o.Logger = logger })
	if err != nil {
		r.LoadErr = err.Error()
		r.Invalid = errors.Is(err, llm.ErrInvalidModel) || errors.Is(err, llm.ErrUnknownTemplate)
	} else {
		var b strings.Builder
		msgs := []llm.Message{{Role: llm.RoleSystem, Content: "You are terse."}, {Role: llm.RoleUser, Content: "Say hello to the model in memory."}}
		_, err := m.Chat(context.Background(), msgs, func(s string) error { b.WriteString(s); return nil },
			func(o *llm.ChatOptions) { o.Temperature = 0; o.MaxTokens = 4 })
		if err != nil {
			r.ChatErr = err.Error()
			r.Full = errors.Is(err, llm.ErrContextFull)
		}
		r.Answer = b.String()
		m.Close()
	}
	j, _ := json.Marshal(r)
	fmt.Printf("\n%s%s\n", ResultPrefix, j)
}

// ResultPrefix starts the line of output that holds the Result.
const ResultPrefix = "loadchild-result: "
