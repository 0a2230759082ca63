//go:build !llm21

package main

import (
	"context"
	"fmt"

	"github.com/memload/memload/llm"
	"github.com/memload/memload/openai"
)

// llmModel serves the openai package's Model with today's *llm.Model. It
// checks what llm does not yet (issue 21: llm will validate every
// ChatOptions field and take tools, tool messages and log probabilities),
// with llm's sentinels, so that openai maps them to 400s naming the field;
// once llm has issue 21's types, *llm.Model is an openai.Model and this
// shrinks to the chatbot's own hooks (quiet cancellation, afterPiece):
// openai_llm21.go, build tag llm21, for the merge.
type llmModel struct {
	m *llm.Model
	s *server
}

func (a *llmModel) Template() string { return a.m.Template() }
func (a *llmModel) Thinks() bool     { return a.m.Thinks() }

func (a *llmModel) Chat(ctx context.Context, msgs []openai.Message, onToken func(string) error, optFns ...func(*openai.ChatOptions)) (llm.Stats, error) {
	var probe openai.ChatOptions
	for _, fn := range optFns {
		fn(&probe)
	}
	if err := checkOptions(probe); err != nil {
		return llm.Stats{}, err
	}
	lmsgs := make([]llm.Message, len(msgs))
	for i, m := range msgs {
		if m.Role == openai.RoleTool || len(m.ToolCalls) > 0 {
			return llm.Stats{}, fmt.Errorf("%w: message %d holds a tool call or result, which this llm's templates cannot render yet", llm.ErrUnknownTemplate, i)
		}
		lmsgs[i] = llm.Message{Role: m.Role, Content: m.Content}
	}

	// While a cancelled generation unwinds, llama.cpp's complaints about
	// the aborted computation are no errors.
	stopQuiet := context.AfterFunc(ctx, func() { a.s.load.cancelling.Add(1) })
	defer func() {
		if !stopQuiet() {
			a.s.load.cancelling.Add(-1)
		}
	}()
	pieces := 0
	return a.m.Chat(ctx, lmsgs, func(piece string) error {
		pieces++
		if a.s.afterPiece != nil {
			defer a.s.afterPiece(ctx, pieces)
		}
		return onToken(piece)
	}, func(o *llm.ChatOptions) {
		// Applied on llm's defaults.
		oo := openai.ChatOptions{ChatOptions: *o}
		for _, fn := range optFns {
			fn(&oo)
		}
		*o = oo.ChatOptions
	})
}

// checkOptions refuses what today's llm cannot do or does not check.
func checkOptions(o openai.ChatOptions) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{llm.ErrBadOption}, args...)...)
	}
	switch {
	case len(o.Tools) > 0 || len(o.GrammarTriggers) > 0:
		return bad("Tools: this llm renders no tools yet")
	case o.OnLogprob != nil || o.TopLogprobs != 0:
		return bad("OnLogprob: this llm reports no log probabilities yet")
	case o.Temperature < 0 || o.Temperature > 2 || o.Temperature != o.Temperature:
		return bad("Temperature %g is out of range: use 0 (greedy) to 2", o.Temperature)
	case o.TopP < 0 || o.TopP > 1 || o.TopP != o.TopP:
		return bad("TopP %g is out of range: use 0 to 1 (1 is off)", o.TopP)
	case o.MinP < 0 || o.MinP > 1 || o.MinP != o.MinP:
		return bad("MinP %g is out of range: use 0 (off) to 1", o.MinP)
	case o.TopK < 0:
		return bad("TopK %d is negative: use 0 (off) or more", o.TopK)
	}
	for i, s := range o.Stop {
		if s == "" {
			return bad("Stop[%d] is empty", i)
		}
	}
	return nil
}

// grammars is the handler's JSON-schema converter: none until
// llm/jsonschema is merged (openai_llm21.go).
var grammars func() openai.GrammarBuilder
