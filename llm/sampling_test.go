package llm

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/hybridgroup/yzma/pkg/llama"
	"github.com/memload/memload/internal/testutil"
)

func TestLogitBias(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	plain := chat(t, m, hello, greedy(8))
	if len(plain.tokens) == 0 {
		t.Fatal("no tokens generated")
	}
	first := plain.tokens[0]

	banned := chat(t, m, hello, greedy(8), func(o *ChatOptions) { o.LogitBias = map[int]float32{first: -100} })
	if banned.tokens[0] == first {
		t.Errorf("with a -100 bias on token %d, the greedy answer still starts with it", first)
	}

	chosen := int(llama.Tokenize(m.vocab, "a", false, false)[0])
	if chosen == first {
		t.Fatalf("the chosen token %d is the greedy one already: pick another", chosen)
	}
	forced := chat(t, m, hello, greedy(4), func(o *ChatOptions) { o.LogitBias = map[int]float32{chosen: 100} })
	if forced.tokens[0] != chosen {
		t.Errorf("with a +100 bias on token %d, the greedy answer starts with %d", chosen, forced.tokens[0])
	}
}

// repeats counts the tokens that appeared before in toks.
func repeats(toks []int) int {
	seen, n := map[int]bool{}, 0
	for _, tok := range toks {
		if seen[tok] {
			n++
		}
		seen[tok] = true
	}
	return n
}

func TestPenalties(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	const n = 32 // within PenaltyLastN
	plain := chat(t, m, hello, greedy(n))
	if repeats(plain.tokens) == 0 {
		t.Fatalf("the unpenalised greedy answer %v repeats no token: the test needs one that does", plain.tokens)
	}
	for name, fn := range map[string]func(*ChatOptions){
		"frequency": func(o *ChatOptions) { o.FrequencyPenalty = 2 },
		"presence":  func(o *ChatOptions) { o.PresencePenalty = 2 },
	} {
		t.Run(name, func(t *testing.T) {
			pen := chat(t, m, hello, greedy(n), fn)
			if r, r0 := repeats(pen.tokens), repeats(plain.tokens); r != 0 {
				t.Errorf("penalised greedy answer repeats %d tokens (unpenalised: %d): %v", r, r0, pen.tokens)
			}
		})
	}
	// A negative penalty favours repeats.
	fond := chat(t, m, hello, greedy(n), func(o *ChatOptions) { o.FrequencyPenalty = -2 })
	if r, r0 := repeats(fond.tokens), repeats(plain.tokens); r < r0 {
		t.Errorf("a -2 frequency penalty gives %d repeats, fewer than the %d without", r, r0)
	}
}

func TestJSONGrammar(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	token := func(s string) int {
		toks := llama.Tokenize(m.vocab, s, false, false)
		if len(toks) != 1 {
			t.Fatalf("%q is %d tokens, want 1", s, len(toks))
		}
		return int(toks[0])
	}
	eos, quote, brace := int(llama.VocabEOS(m.vocab)), token(`"`), token("}")
	for name, fn := range map[string]func(*ChatOptions){
		// Random weights rarely close a string: nudge the quote and the
		// closing brace, and end the turn as soon as the grammar lets the
		// model, so that the answer finishes with "stop". Which tokens the
		// grammar allows is still up to it: nothing forces a "{" first.
		"eager end": func(o *ChatOptions) { o.LogitBias = map[int]float32{eos: 100, quote: 4, brace: 4} },
		"plain":     func(o *ChatOptions) {},
	} {
		t.Run(name, func(t *testing.T) {
			tr := chat(t, m, hello, greedy(200), func(o *ChatOptions) { o.Grammar = JSONGrammar }, fn)
			answer := strings.Join(tr.pieces, "")
			t.Logf("%s after %d tokens: %q", tr.stats.FinishReason, tr.stats.GeneratedTokens, answer)
			if tr.stats.FinishReason == "stop" {
				var v map[string]any
				if err := json.Unmarshal([]byte(answer), &v); err != nil {
					t.Errorf("answer %q under the JSON grammar is not a JSON object: %v", answer, err)
				}
			} else if !strings.HasPrefix(answer, "{") {
				t.Errorf("answer %q cut at %d tokens does not start a JSON object", answer, tr.stats.GeneratedTokens)
			}
			if name == "eager end" && tr.stats.FinishReason != "stop" {
				t.Errorf("finish reason %q: the EOS bias should end the answer with the first complete object", tr.stats.FinishReason)
			}
		})
	}
}

func TestBadSamplingOptions(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	nVocab := int(llama.VocabNTokens(m.vocab))
	for _, c := range []struct {
		name string
		fn   func(*ChatOptions)
		want string
	}{
		{"grammar", func(o *ChatOptions) { o.Grammar = `root ::= "a" | ` + "(" }, "Grammar is not valid GBNF"},
		{"no root", func(o *ChatOptions) { o.Grammar = `start ::= "a"` }, "Grammar is not valid GBNF"},
		{"presence", func(o *ChatOptions) { o.PresencePenalty = 2.5 }, "PresencePenalty 2.5 is out of range"},
		{"frequency", func(o *ChatOptions) { o.FrequencyPenalty = -3 }, "FrequencyPenalty -3 is out of range"},
		{"token", func(o *ChatOptions) { o.LogitBias = map[int]float32{nVocab: 1} }, "is not in the vocabulary"},
		{"negative token", func(o *ChatOptions) { o.LogitBias = map[int]float32{-1: 1} }, "is not in the vocabulary"},
		{"bias", func(o *ChatOptions) { o.LogitBias = map[int]float32{1: 101} }, "use -100 to 100"},
		{"max tokens", func(o *ChatOptions) { o.MaxTokens = -1 }, "MaxTokens -1 is negative"},
		{"temperature", func(o *ChatOptions) { o.Temperature = 2.5 }, "Temperature 2.5 is out of range"},
		{"top k", func(o *ChatOptions) { o.TopK = -1 }, "TopK -1 is negative"},
		{"top p", func(o *ChatOptions) { o.TopP = 0 }, "TopP 0 is out of range"},
		{"min p", func(o *ChatOptions) { o.MinP = 1.5 }, "MinP 1.5 is out of range"},
		{"stop", func(o *ChatOptions) { o.Stop = []string{"x", ""} }, "Stop[1] is empty"},
		{"grammar NUL", func(o *ChatOptions) { o.Grammar = "root ::= \"\x00\"" }, "Grammar holds a NUL byte"},
		{"top logprobs", func(o *ChatOptions) { o.TopLogprobs = 3 }, "TopLogprobs 3 without OnLogprob"},
		{"tools", func(o *ChatOptions) { o.Tools = []Tool{{Name: "f", Parameters: []byte("[1]")}} }, "Tools[0] (f).Parameters is not a JSON object"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := m.Chat(context.Background(), hello, nil, greedy(4), c.fn)
			if !errors.Is(err, ErrBadOption) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	// The model still answers after the refusals.
	if tr := chat(t, m, hello, greedy(4)); tr.stats.GeneratedTokens == 0 {
		t.Error("no answer after the refused options")
	}
}
