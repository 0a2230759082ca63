package llm

import (
	"fmt"

	"github.com/hybridgroup/yzma/pkg/llama"
)

// warmUpMessages are tokenized at load as a chat's prompt would be: text,
// digits, punctuation, a newline and characters outside ASCII.
var warmUpMessages = []Message{
	{Role: RoleSystem, Content: "You are a helpful assistant."},
	{Role: RoleUser, Content: "Hello! What is 12 + 30?\nÇa va? 你好 👋"},
}

// warmUp tries the model on the freshly made context, so that a model
// llama.cpp loads but cannot run fails the load with [ErrInvalidModel]
// rather than the first chat: it tokenizes a chat's prompt (a tokenizer
// at odds with the vocabulary gives tokens that do not exist) and
// evaluates its first token (a graph llama.cpp cannot compute). The
// cache's cells are then cleared, not its data: only the pages of that one
// token's keys and values (a page or two per layer) are touched, and the
// rest of the empty cache stays given back (kvpages.go).
func (m *Model) warmUp(s *loadSession) error {
	s.forget()
	n := llama.VocabNTokens(m.vocab)
	prompt, err := m.tmpl.render(warmUpMessages, nil)
	if err != nil {
		return err
	}
	tokens := m.tokenize(prompt) // as Chat does: a NUL in a token's text must not reach yzma's C string
	if len(tokens) == 0 {
		return fmt.Errorf("%w %s: llama.cpp's tokenizer gives no tokens for a chat's prompt: the tokenizer (tokenizer.ggml.model) does not fit the vocabulary", ErrInvalidModel, m.path)
	}
	for i, tok := range tokens {
		if tok < 0 || int32(tok) >= n {
			return fmt.Errorf("%w %s: llama.cpp's tokenizer gives token %d (at %d of a chat's prompt), outside the vocabulary of %d tokens: the tokenizer (tokenizer.ggml.model) does not fit the vocabulary",
				ErrInvalidModel, m.path, tok, i, n)
		}
	}
	m.batch.Clear()
	m.batch.Add(tokens[0], 0, seq0, true)
	rc, err := llama.Decode(m.lctx, m.batch)
	if mem, merr := llama.GetMemory(m.lctx); merr == nil {
		llama.MemoryClear(mem, false)
	}
	if err == nil && rc == 0 {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("llama_decode returned %d", rc)
	}
	// A fresh context, one token: what fails is the model.
	why := err.Error()
	if reason := s.reason(); reason != "" {
		if notTheFile.MatchString(reason) {
			return fmt.Errorf("llm: %s: llama.cpp cannot evaluate a first token: %s: %w", m.path, reason, err)
		}
		why = reason + " (" + why + ")"
	}
	return fmt.Errorf("%w %s: llama.cpp loads it but cannot evaluate a first token: %s", ErrInvalidModel, m.path, why)
}
