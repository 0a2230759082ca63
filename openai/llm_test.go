//go:build !llm21

package openai

import (
	"context"
	"testing"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
)

// grammars stands in for jsonschema.Builder until it is merged.
var grammars, realConverter = newFakeGrammars, false

// tinyModel writes a random-weight Qwen2 model with a ChatML template.
func tinyModel(t *testing.T) string { return testutil.TinyModel(t, "qwen2") }

// wrap serves Model with today's *llm.Model, for the tests that run real
// llama.cpp: the grammar reaches llama.cpp's sampler, the rest of issue
// 21's options are not llm's yet (the tools are not rendered: the grammar
// alone makes the calls).
func wrap(m *llm.Model) Model { return llmModel{m} }

type llmModel struct{ *llm.Model }

func (m llmModel) Chat(ctx context.Context, msgs []Message, onToken func(string) error, optFns ...func(*ChatOptions)) (llm.Stats, error) {
	lmsgs := make([]llm.Message, len(msgs))
	for i, msg := range msgs {
		lmsgs[i] = llm.Message{Role: msg.Role, Content: msg.Content}
	}
	return m.Model.Chat(ctx, lmsgs, onToken, func(o *llm.ChatOptions) {
		oo := ChatOptions{ChatOptions: *o}
		for _, fn := range optFns {
			fn(&oo)
		}
		*o = oo.ChatOptions
	})
}
