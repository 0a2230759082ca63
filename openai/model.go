package openai

import (
	"context"

	"github.com/memload/memload/llm"
)

// Model is what the handler needs of a model; *llm.Model is one. Chat is
// [llm.Model.Chat]: it renders msgs with the model's chat template,
// generates the answer and passes it to onToken piece by piece. Template
// names the template family (it decides the tool-call format) and Thinks
// says whether the answer starts inside a reasoning block.
type Model interface {
	Chat(ctx context.Context, msgs []Message, onToken func(string) error, optFns ...func(*ChatOptions)) (llm.Stats, error)
	Template() string
	Thinks() bool
}

// The llm types a Model takes.
type (
	Message      = llm.Message
	ToolCall     = llm.ToolCall
	Tool         = llm.Tool
	ChatOptions  = llm.ChatOptions
	TokenLogprob = llm.TokenLogprob
	TopLogprob   = llm.TopLogprob
)

// RoleTool is the role of a tool's result.
const RoleTool = llm.RoleTool

var errBadMessage = llm.ErrBadMessage

var _ Model = (*llm.Model)(nil)
