package main

import (
	"context"

	"github.com/memload/memload/llm"
	"github.com/memload/memload/llm/jsonschema"
	"github.com/memload/memload/openai"
)

// llmModel is the model with the chatbot's hooks around Chat: llama.cpp's
// complaints about a cancelled generation are quiet, and tests can hold
// generation after each piece.
type llmModel struct {
	m *llm.Model
	s *server
}

func (a *llmModel) Template() string { return a.m.Template() }
func (a *llmModel) Thinks() bool     { return a.m.Thinks() }

func (a *llmModel) Chat(ctx context.Context, msgs []llm.Message, onToken func(string) error, optFns ...func(*llm.ChatOptions)) (llm.Stats, error) {
	stopQuiet := context.AfterFunc(ctx, func() { a.s.load.cancelling.Add(1) })
	defer func() {
		if !stopQuiet() {
			a.s.load.cancelling.Add(-1)
		}
	}()
	pieces := 0
	return a.m.Chat(ctx, msgs, func(piece string) error {
		pieces++
		if a.s.afterPiece != nil {
			defer a.s.afterPiece(ctx, pieces)
		}
		return onToken(piece)
	}, optFns...)
}

// grammars is the handler's JSON-schema converter.
func grammars() openai.GrammarBuilder { return &jsonschema.Builder{} }
