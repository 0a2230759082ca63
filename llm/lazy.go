package llm

import (
	"fmt"
	"math"
	"regexp"
	"strings"

	"github.com/hybridgroup/yzma/pkg/llama"
)

// lazyGuard stands between a lazy grammar and the tokens it accepts.
// When a trigger matches, llama.cpp feeds the grammar the text from the
// trigger on without asking it first, and throws a C++ exception, which
// aborts the process, if the grammar does not accept that text. The guard
// runs the same trigger patterns in Go and, before the token that
// triggers reaches llama.cpp, checks the text with a grammar sampler of
// its own, token by token, the way sampling checks candidates.
type lazyGuard struct {
	m        *Model
	grammar  string
	patterns []*regexp.Regexp // triggerPattern's, anchored
	sources  []string
	buf      []byte // the text so far, special tokens' included, as llama.cpp keeps it
	done     bool
}

func newLazyGuard(m *Model, grammar string, triggers []string) (*lazyGuard, error) {
	g := &lazyGuard{m: m, grammar: grammar, sources: triggers}
	for _, p := range triggers {
		_, w, err := triggerPattern(p)
		if err != nil {
			return nil, err
		}
		g.patterns = append(g.patterns, regexp.MustCompile(`^(?:`+w+`)$`))
	}
	return g, nil
}

// check returns an error if accepting tok would hand the grammar text it
// does not accept.
func (g *lazyGuard) check(tok llama.Token) error {
	if g.done {
		return nil
	}
	g.buf = append(g.buf, tokenText(g.m.vocab, tok)...)
	for i, re := range g.patterns {
		loc := re.FindSubmatchIndex(g.buf)
		if loc == nil {
			continue
		}
		g.done = true
		start := loc[0]
		for k := 2; k < len(loc); k += 2 {
			if loc[k] >= 0 && loc[k+1] > loc[k] {
				start = loc[k]
				break
			}
		}
		text := string(g.buf[start:])
		if !g.accepts(text) {
			return fmt.Errorf("%w: GrammarTriggers[%d] %q matched, and the Grammar does not accept the text from there, %q: it must (llama.cpp feeds it that text)",
				ErrBadOption, i, g.sources[i], text)
		}
		return nil
	}
	return nil
}

// accepts reports whether the grammar accepts text as a start.
func (g *lazyGuard) accepts(text string) bool {
	if strings.IndexByte(text, 0) >= 0 {
		return false // llama.cpp's grammars never take a NUL
	}
	s := llama.SamplerInitGrammar(g.m.vocab, g.grammar, "root")
	if s == 0 {
		return false
	}
	defer llama.SamplerFree(s)
	for _, tok := range llama.Tokenize(g.m.vocab, text, false, false) {
		cand := []llama.TokenData{{Id: tok}}
		arr := llama.TokenDataArray{Data: &cand[0], Size: 1, Selected: -1}
		llama.SamplerApply(s, &arr)
		if math.IsInf(float64(cand[0].Logit), -1) {
			return false
		}
		llama.SamplerAccept(s, tok)
	}
	return true
}
