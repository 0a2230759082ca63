package llm

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

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

// checkOptions refuses options out of their ranges, naming the field and
// the range.
func checkOptions(o ChatOptions, nVocab int) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadOption}, args...)...)
	}
	nan := func(f float32) bool { return f != f }
	switch {
	case o.MaxTokens < 0:
		return bad("MaxTokens %d is negative: use 0 (no cap) or more", o.MaxTokens)
	case o.Temperature < 0 || o.Temperature > 2 || nan(o.Temperature):
		return bad("Temperature %g is out of range: use 0 to 2", o.Temperature)
	case o.TopK < 0:
		return bad("TopK %d is negative: use 0 (off) or more", o.TopK)
	case !(o.TopP > 0 && o.TopP <= 1):
		return bad("TopP %g is out of range: use more than 0, up to 1 (off)", o.TopP)
	case !(o.MinP >= 0 && o.MinP <= 1):
		return bad("MinP %g is out of range: use 0 (off) to 1", o.MinP)
	case o.TopLogprobs < 0 || o.TopLogprobs > MaxTopLogprobs:
		return bad("TopLogprobs %d is out of range: use 0 to %d", o.TopLogprobs, MaxTopLogprobs)
	case o.TopLogprobs > 0 && o.OnLogprob == nil:
		return bad("TopLogprobs %d without OnLogprob: set OnLogprob to receive them", o.TopLogprobs)
	case strings.IndexByte(o.Grammar, 0) >= 0:
		return bad("Grammar holds a NUL byte")
	case len(o.GrammarTriggers) > 0 && o.Grammar == "":
		return bad("GrammarTriggers without a Grammar: set Grammar to what applies after a trigger")
	}
	for i, s := range o.Stop {
		if s == "" {
			return bad("Stop[%d] is empty", i)
		}
	}
	for i, p := range o.GrammarTriggers {
		if _, _, err := triggerPattern(p); err != nil {
			return bad("GrammarTriggers[%d] %q: %v", i, p, err)
		}
	}
	if err := checkTools(o.Tools); err != nil {
		return err
	}
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

// triggerPattern returns the pattern llama.cpp is given for a
// GrammarTriggers entry, and the same in Go's syntax (for lazyGuard).
// llama.cpp matches a pattern against all the text so far
// (std::regex_match), and feeds the grammar from the first capturing group
// that matched, else from the match's start; so p is wrapped to match
// anywhere, and given a group of its own if it has none.
func triggerPattern(p string) (ecma, goSyntax string, err error) {
	if p == "" {
		return "", "", errors.New("empty pattern")
	}
	re, err := regexp.Compile(p)
	if err != nil {
		return "", "", err
	}
	e, err := ecmaScript(p)
	if err != nil {
		return "", "", err
	}
	if re.NumSubexp() == 0 {
		return `[\s\S]*?(` + e + `)[\s\S]*`, `[\s\S]*?(` + p + `)[\s\S]*`, nil
	}
	return `[\s\S]*?(?:` + e + `)[\s\S]*`, `[\s\S]*?(?:` + p + `)[\s\S]*`, nil
}

// newSampler returns llama.cpp's sampler chain for o: logit biases,
// penalties and the grammar first (the constraints), then, in the order of
// llama.cpp's command line tools, top-k, top-p, min-p, temperature and a
// draw (or the greedy pick at temperature 0). With OnLogprob or
// GrammarTriggers set, the constraints are a chain of their own (see
// sampler); pick is then the rest.
func (m *Model) newSampler(o ChatOptions) (constrain, pick llama.Sampler, err error) {
	nVocab := int(llama.VocabNTokens(m.vocab))
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
		var g llama.Sampler
		if len(o.GrammarTriggers) > 0 {
			patterns := make([]string, len(o.GrammarTriggers))
			for i, p := range o.GrammarTriggers {
				patterns[i], _, _ = triggerPattern(p) // checked by checkOptions
			}
			g = llama.SamplerInitGrammarLazyPatterns(m.vocab, o.Grammar, "root", patterns, nil)
		} else {
			g = llama.SamplerInitGrammar(m.vocab, o.Grammar, "root")
		}
		// llama.cpp logs the parse error and returns no sampler.
		if g == 0 {
			llama.SamplerFree(chain)
			return 0, 0, fmt.Errorf("%w: the Grammar is not valid GBNF with a rule named root, or a GrammarTriggers pattern is not a regular expression llama.cpp reads (llama.cpp's log says which)", ErrBadOption)
		}
		llama.SamplerChainAdd(chain, g)
	}
	constrain = chain
	if o.OnLogprob != nil || len(o.GrammarTriggers) > 0 {
		pick = llama.SamplerChainInit(llama.SamplerChainDefaultParams())
		chain = pick
	}
	if o.Temperature <= 0 {
		llama.SamplerChainAdd(chain, llama.SamplerInitGreedy())
		return constrain, pick, nil
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
	return constrain, pick, nil
}
