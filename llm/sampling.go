package llm

import (
	"errors"
	"fmt"

	"github.com/hybridgroup/yzma/pkg/llama"
)

// PenaltyLastN is the window of [ChatOptions.PresencePenalty] and
// [ChatOptions.FrequencyPenalty]: the last 64 generated tokens, llama.cpp's
// own default (its --repeat-last-n).
const PenaltyLastN = 64

// JSONGrammar is a GBNF grammar for one JSON object, for
// [ChatOptions.Grammar]. It is llama.cpp's grammars/json.gbnf (MIT licence,
// Copyright (c) 2023-2024 The ggml authors).
const JSONGrammar = `root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
`

// ErrBadOption is matched by the error of [Model.Chat] when a
// [ChatOptions] value is out of range or invalid: a caller's mistake, not
// the engine's.
var ErrBadOption = errors.New("llm: invalid chat option")

// checkSampling refuses sampling options out of their ranges.
func checkSampling(o ChatOptions, nVocab int) error {
	for _, p := range []struct {
		name string
		v    float32
	}{{"PresencePenalty", o.PresencePenalty}, {"FrequencyPenalty", o.FrequencyPenalty}} {
		if p.v < -2 || p.v > 2 || p.v != p.v {
			return fmt.Errorf("%w: %s %g is out of range: use -2 to 2 (0 is off)", ErrBadOption, p.name, p.v)
		}
	}
	for tok, bias := range o.LogitBias {
		if tok < 0 || tok >= nVocab {
			return fmt.Errorf("%w: LogitBias token %d is not in the vocabulary: ids go from 0 to %d", ErrBadOption, tok, nVocab-1)
		}
		if bias < -100 || bias > 100 || bias != bias {
			return fmt.Errorf("%w: LogitBias of token %d is %g: use -100 to 100", ErrBadOption, tok, bias)
		}
	}
	return nil
}

// newSampler returns llama.cpp's sampler chain for o: logit biases,
// penalties and the grammar first, then, in the order of llama.cpp's
// command line tools, top-k, top-p, min-p, temperature and a draw (or the
// greedy pick at temperature 0).
func (m *Model) newSampler(o ChatOptions) (llama.Sampler, error) {
	nVocab := int(llama.VocabNTokens(m.vocab))
	if err := checkSampling(o, nVocab); err != nil {
		return 0, err
	}
	chain := llama.SamplerChainInit(llama.SamplerChainDefaultParams())
	if len(o.LogitBias) > 0 {
		biases := make([]llama.LogitBias, 0, len(o.LogitBias))
		for tok, bias := range o.LogitBias {
			biases = append(biases, llama.LogitBias{Token: llama.Token(tok), Bias: bias})
		}
		llama.SamplerChainAdd(chain, llama.SamplerInitLogitBias(int32(nVocab), int32(len(biases)), &biases[0]))
	}
	if o.PresencePenalty != 0 || o.FrequencyPenalty != 0 {
		llama.SamplerChainAdd(chain, llama.SamplerInitPenalties(int32(nVocab), PenaltyLastN, 1, o.FrequencyPenalty, o.PresencePenalty))
	}
	if o.Grammar != "" {
		// llama.cpp logs the parse error and returns no sampler.
		g := llama.SamplerInitGrammar(m.vocab, o.Grammar, "root")
		if g == 0 {
			llama.SamplerFree(chain)
			return 0, fmt.Errorf("%w: the Grammar is not valid GBNF with a rule named root (llama.cpp's log says where it fails)", ErrBadOption)
		}
		llama.SamplerChainAdd(chain, g)
	}
	if o.Temperature <= 0 {
		llama.SamplerChainAdd(chain, llama.SamplerInitGreedy())
		return chain, nil
	}
	if o.TopK > 0 {
		llama.SamplerChainAdd(chain, llama.SamplerInitTopK(int32(o.TopK)))
	}
	if o.TopP < 1 {
		llama.SamplerChainAdd(chain, llama.SamplerInitTopP(o.TopP, 1))
	}
	if o.MinP > 0 {
		llama.SamplerChainAdd(chain, llama.SamplerInitMinP(o.MinP, 1))
	}
	llama.SamplerChainAdd(chain, llama.SamplerInitTemp(o.Temperature))
	llama.SamplerChainAdd(chain, llama.SamplerInitDist(o.Seed))
	return chain, nil
}
