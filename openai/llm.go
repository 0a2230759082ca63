//go:build !llm21

package openai

import (
	"context"
	"encoding/json"

	"github.com/memload/memload/llm"
)

// This file is the one place that speaks llm's issue-21 types. Until llm
// has them, Message, ToolCall, Tool, ChatOptions, TokenLogprob and
// TopLogprob mirror their shape here; llm21.go (build tag llm21, for the
// merge) makes each an alias of llm's, and *llm.Model a Model as it is.

// errBadMessage is llm's error for messages its template cannot take.
var errBadMessage = llm.ErrUnknownTemplate

// Model is what the handler needs of a model. Chat is [llm.Model.Chat]:
// it renders msgs with the model's chat template, generates the answer and
// passes it to onToken piece by piece. Template names the template family
// (it decides the tool-call format) and Thinks says whether the answer
// starts inside a reasoning block.
type Model interface {
	Chat(ctx context.Context, msgs []Message, onToken func(string) error, optFns ...func(*ChatOptions)) (llm.Stats, error)
	Template() string
	Thinks() bool
}

// Message is one turn of a conversation, as llm takes it.
type Message struct {
	Role       string // llm.RoleSystem, RoleUser, RoleAssistant or RoleTool
	Content    string
	ToolCalls  []ToolCall // an assistant's calls
	ToolCallID string     // a tool result: the call it answers
	Name       string     // a tool result: the function's name
}

// RoleTool is the role of a tool's result.
const RoleTool = "tool"

// ToolCall is a function call of the model: Arguments is a JSON object.
type ToolCall struct{ ID, Name, Arguments string }

// Tool is a function the model may call; Parameters is its JSON schema.
type Tool struct {
	Name, Description string
	Parameters        json.RawMessage
}

// ChatOptions are llm's options for one Chat call, with issue 21's fields.
type ChatOptions struct {
	llm.ChatOptions

	Tools []Tool // rendered by the template
	// GrammarTriggers are regular expressions: the Grammar applies only
	// from the first match on (lazily, for tool_choice "auto").
	GrammarTriggers []string
	TopLogprobs     int                      // alternatives reported per token, up to 20
	OnLogprob       func(TokenLogprob) error // per token, before its text reaches onToken
}

// TokenLogprob is a generated token's log probability and its most likely
// alternatives.
type TokenLogprob struct {
	Token   string
	Bytes   []byte
	Logprob float64
	Top     []TopLogprob
}

// TopLogprob is one alternative of a generated token.
type TopLogprob struct {
	Token   string
	Bytes   []byte
	Logprob float64
}
