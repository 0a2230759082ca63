package openai

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/memload/memload/llm"
)

// fakeModel stands in for an llm model: it answers with a script of
// pieces, and records what it was asked.
type fakeModel struct {
	template string
	thinks   bool
	pieces   []string
	err      error
	finish   string // default "stop"
	// respond, if set, gives the pieces for each call instead.
	respond func(msgs []Message, o ChatOptions) []string

	mu   sync.Mutex
	msgs []Message
	opts ChatOptions
}

func (f *fakeModel) Template() string { return f.template }
func (f *fakeModel) Thinks() bool     { return f.thinks }

func (f *fakeModel) Chat(ctx context.Context, msgs []Message, onToken func(string) error, optFns ...func(*ChatOptions)) (llm.Stats, error) {
	var o ChatOptions
	o.Temperature = 0.8
	for _, fn := range optFns {
		fn(&o)
	}
	f.mu.Lock()
	f.msgs, f.opts = msgs, o
	f.mu.Unlock()
	if f.err != nil {
		return llm.Stats{}, f.err
	}
	st := llm.Stats{PromptTokens: 10, CachedTokens: 4}
	pieces := f.pieces
	if f.respond != nil {
		pieces = f.respond(msgs, o)
	}
	for i, p := range pieces {
		if o.OnLogprob != nil {
			t := TokenLogprob{Token: p, Bytes: []byte(p), Logprob: -float64(i) / 10}
			for k := range o.TopLogprobs {
				alt := fmt.Sprintf("alt%d", k)
				t.Top = append(t.Top, TopLogprob{Token: alt, Bytes: []byte(alt), Logprob: -1 - float64(k)})
			}
			if err := o.OnLogprob(t); err != nil {
				return st, err
			}
		}
		st.GeneratedTokens++
		if err := onToken(p); err != nil {
			return st, err
		}
		if err := ctx.Err(); err != nil {
			return st, err
		}
	}
	st.FinishReason = "stop"
	if f.finish != "" {
		st.FinishReason = f.finish
	}
	return st, nil
}

// asked returns what the model was last asked.
func (f *fakeModel) asked() ([]Message, ChatOptions) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msgs, f.opts
}

// errUnsupported stands in for jsonschema.ErrUnsupported.
var errUnsupported = errors.New("jsonschema: unsupported keyword")

// fakeGrammars stands in for jsonschema.Builder: every schema is "a JSON
// object" (llm.JSONGrammar's rules), except that the keyword "pattern"
// is refused as unsupported. Its grammars are valid GBNF.
type fakeGrammars struct {
	rules   []string
	names   map[string]bool
	schemas []string
}

func newFakeGrammars() GrammarBuilder { return &fakeGrammars{names: map[string]bool{}} }

var jsonRuleNames = regexp.MustCompile(`\b(value|object|array|string|number|ws)\b`)

func (b *fakeGrammars) Schema(schema []byte) (string, error) {
	if strings.Contains(string(schema), `"pattern"`) {
		return "", fmt.Errorf("%w: pattern", errUnsupported)
	}
	b.schemas = append(b.schemas, string(schema))
	if !b.names["j-object"] {
		for _, line := range strings.SplitAfter(llm.JSONGrammar, "\n")[1:] {
			if strings.HasPrefix(line, "#") {
				continue
			}
			b.rules = append(b.rules, jsonRuleNames.ReplaceAllString(line, "j-$1"))
		}
		for _, n := range []string{"value", "object", "array", "string", "number", "ws"} {
			b.names["j-"+n] = true
		}
	}
	return "j-object", nil
}

func (b *fakeGrammars) Rule(name, body string) string {
	n := name
	for i := 2; b.names[n]; i++ {
		n = fmt.Sprintf("%s-%d", name, i)
	}
	b.names[n] = true
	b.rules = append(b.rules, n+" ::= "+body+"\n")
	return n
}

func (b *fakeGrammars) Grammar(root string) string {
	return "root ::= " + root + "\n" + strings.Join(b.rules, "")
}
