package llm

import (
	"context"
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/hybridgroup/yzma/pkg/llama"
	"github.com/memload/memload/internal/testutil"
)

// qwen25Model is a tiny model carrying Qwen2.5-Instruct's published
// template, which renders tools.
func qwen25Model(t *testing.T) *Model {
	t.Helper()
	cfg := testutil.TinyConfig("qwen2")
	cfg.Template = testutil.PublishedTemplate(t, testutil.Qwen25File)
	return loadModel(t, testutil.TinyModelWith(t, cfg))
}

func TestToolsThroughTheModelsTemplate(t *testing.T) {
	m := qwen25Model(t)
	if m.Template() != TemplateChatML || !m.RendersTools() {
		t.Fatalf("Template() = %q, RendersTools() = %v; want chatml, true", m.Template(), m.RendersTools())
	}
	question := []Message{{Role: RoleUser, Content: "Weather in Paris?"}}
	plain := chat(t, m, question, greedy(4))
	offered := chat(t, m, question, greedy(4), func(o *ChatOptions) { o.Tools = []Tool{weatherTool} })
	// The tools' schema is in the prompt: many more tokens.
	if offered.stats.PromptTokens < plain.stats.PromptTokens+40 {
		t.Errorf("prompt with a tool: %d tokens, without: %d; the tool is not rendered", offered.stats.PromptTokens, plain.stats.PromptTokens)
	}
	conv := append(question,
		Message{Role: RoleAssistant, ToolCalls: []ToolCall{{ID: "call1", Name: "get_weather", Arguments: `{"city": "Paris"}`}}},
		Message{Role: RoleTool, ToolCallID: "call1", Content: "21 C"})
	after := chat(t, m, conv, greedy(4), func(o *ChatOptions) { o.Tools = []Tool{weatherTool} })
	if after.stats.GeneratedTokens == 0 || after.stats.PromptTokens <= offered.stats.PromptTokens {
		t.Errorf("after the tool's result: %+v", after.stats)
	}
	// The rendering's special tokens are tokenized as such.
	prompt, err := m.tmpl.render(conv, []Tool{weatherTool})
	if err != nil || !strings.Contains(prompt, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>") ||
		!strings.Contains(prompt, "<tool_response>\n21 C\n</tool_response>") {
		t.Errorf("prompt %q, %v", prompt, err)
	}
	_, err = m.Chat(context.Background(), conv, nil, greedy(1), func(o *ChatOptions) { o.Tools = []Tool{{Name: "bad name"}} })
	if !errors.Is(err, ErrBadOption) || !strings.Contains(err.Error(), "Tools[0].Name") {
		t.Errorf("bad tool name: %v", err)
	}
}

// TestNULRoundTrip feeds an answer holding a NUL byte (the model's byte
// token, forced by a bias), other control bytes and invalid UTF-8 (a byte
// token cut short) back in the next turn, with the model's own template
// and with llama.cpp's built-in family.
func TestNULRoundTrip(t *testing.T) {
	path := testutil.TinyModel(t, "qwen2")
	for name, fn := range map[string]func(*Options){
		"jinja":   func(*Options) {},
		"builtin": func(o *Options) { o.Template = TemplateChatML },
	} {
		t.Run(name, func(t *testing.T) {
			m := loadModel(t, path, fn)
			if (m.tmpl.jinja != nil) != (name == "jinja") {
				t.Fatalf("rendered by jinja: %v", m.tmpl.jinja != nil)
			}
			nul, ok := m.nulToken()
			if !ok {
				t.Fatal("the vocabulary has no byte token for NUL")
			}
			tr := chat(t, m, hello, greedy(3), func(o *ChatOptions) { o.LogitBias = map[int]float32{int(nul): 100} })
			answer := strings.Join(tr.pieces, "")
			if !strings.Contains(answer, "\x00") {
				t.Fatalf("answer %q holds no NUL", answer)
			}
			conv := append(append([]Message{}, hello...), Message{Role: RoleAssistant, Content: answer + "\x01\x7f\xff\xf0\x9f"}, Message{Role: RoleUser, Content: "Again, \x00 please."})
			var got []int
			m.traceToken = nil
			tokens := m.tokenize(mustRender(t, m, conv))
			for _, tok := range tokens {
				if tok == nul {
					got = append(got, int(tok))
				}
			}
			if len(got) != strings.Count(answer, "\x00")+1 {
				t.Errorf("the prompt has %d NUL tokens, want %d", len(got), strings.Count(answer, "\x00")+1)
			}
			if tr := chat(t, m, conv, greedy(3)); tr.stats.GeneratedTokens == 0 {
				t.Error("no answer to the conversation with NUL bytes")
			}
		})
	}
}

func mustRender(t *testing.T, m *Model, msgs []Message) string {
	t.Helper()
	s, err := m.tmpl.render(msgs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLazyGrammar forces the answer to "a" tokens: the grammar, lazy,
// lets the first three through and engages at the fourth (the trigger's
// capturing group), from which it allows only three digits and a full
// stop. Applied from the start, it allows a single "a".
func TestLazyGrammar(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	a := llama.Tokenize(m.vocab, "a", false, false)
	if len(a) != 1 {
		t.Fatalf("%q is %d tokens", "a", len(a))
	}
	const grammar = `root ::= "a" [0-9] [0-9] [0-9] "."`
	force := func(o *ChatOptions) { o.LogitBias = map[int]float32{int(a[0]): 100} }
	answer := func(fns ...func(*ChatOptions)) string {
		tr := chat(t, m, hello, append([]func(*ChatOptions){greedy(12), force}, fns...)...)
		return strings.Join(tr.pieces, "")
	}
	if got := answer(); got != strings.Repeat("a", 12) {
		t.Fatalf("the bias does not force %q: %q", "a", got)
	}
	lazy := answer(func(o *ChatOptions) { o.Grammar, o.GrammarTriggers = grammar, []string{`a{3}(a)`} })
	if !regexp.MustCompile(`^aaaa[0-9]{3}\.$`).MatchString(lazy) {
		t.Errorf("lazy grammar, trigger a{3}(a): %q, want aaaa, three digits and a full stop", lazy)
	}
	eager := answer(func(o *ChatOptions) { o.Grammar = grammar })
	if !regexp.MustCompile(`^a[0-9]{3}\.$`).MatchString(eager) {
		t.Errorf("grammar from the start: %q, want a, three digits and a full stop", eager)
	}
	// Without a group the grammar sees the whole match.
	whole := answer(func(o *ChatOptions) { o.Grammar, o.GrammarTriggers = `root ::= "aa" [0-9] "."`, []string{`aa`} })
	if !regexp.MustCompile(`^aa[0-9]\.$`).MatchString(whole) {
		t.Errorf("lazy grammar, trigger aa: %q, want aa, a digit and a full stop", whole)
	}
	for _, c := range []struct {
		fn   func(*ChatOptions)
		want string
	}{
		{func(o *ChatOptions) { o.GrammarTriggers = []string{"a"} }, "GrammarTriggers without a Grammar"},
		{func(o *ChatOptions) { o.Grammar, o.GrammarTriggers = grammar, []string{"(a"} }, "GrammarTriggers[0]"},
		{func(o *ChatOptions) { o.Grammar, o.GrammarTriggers = grammar, []string{""} }, "empty pattern"},
		// std::regex would throw on Go's flags, aborting the process.
		{func(o *ChatOptions) { o.Grammar, o.GrammarTriggers = grammar, []string{"(?i)a"} }, "case-insensitive"},
	} {
		if _, err := m.Chat(context.Background(), hello, nil, greedy(2), c.fn); !errors.Is(err, ErrBadOption) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want ErrBadOption with %q", err, c.want)
		}
	}
}

func TestLogprobs(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	collect := func(fns ...func(*ChatOptions)) ([]TokenLogprob, string) {
		var lps []TokenLogprob
		tr := chat(t, m, hello, append([]func(*ChatOptions){greedy(16), func(o *ChatOptions) {
			o.TopLogprobs = 5
			o.OnLogprob = func(lp TokenLogprob) error { lps = append(lps, lp); return nil }
		}}, fns...)...)
		if len(lps) != tr.stats.GeneratedTokens {
			t.Errorf("%d logprobs for %d tokens", len(lps), tr.stats.GeneratedTokens)
		}
		return lps, strings.Join(tr.pieces, "")
	}
	plain := chat(t, m, hello, greedy(16))
	lps, text := collect()
	if text != strings.Join(plain.pieces, "") {
		t.Errorf("with logprobs the greedy answer is %q, without %q", text, strings.Join(plain.pieces, ""))
	}
	var joined strings.Builder
	for i, lp := range lps {
		joined.Write(lp.Bytes)
		if len(lp.Top) != 5 || lp.Token != string(lp.Bytes) {
			t.Fatalf("token %d: %+v", i, lp)
		}
		sum := 0.0
		for k, top := range lp.Top {
			sum += math.Exp(top.Logprob)
			if k > 0 && top.Logprob > lp.Top[k-1].Logprob {
				t.Errorf("token %d: top logprobs out of order: %+v", i, lp.Top)
			}
		}
		// The greedy token is the most likely one.
		if lp.Logprob != lp.Top[0].Logprob || lp.Token != lp.Top[0].Token || lp.Logprob > 0 {
			t.Errorf("token %d: logprob %g (%q), top %g (%q)", i, lp.Logprob, lp.Token, lp.Top[0].Logprob, lp.Top[0].Token)
		}
		if sum > 1+1e-9 {
			t.Errorf("token %d: the top probabilities sum to %g", i, sum)
		}
	}
	if joined.String() != text {
		t.Errorf("the logprobs' tokens make %q, the answer %q", joined.String(), text)
	}
	// Under a grammar, tokens it forbids are never among the top ones: the
	// first must open a JSON object.
	lps, _ = collect(func(o *ChatOptions) { o.Grammar = JSONGrammar })
	if len(lps) == 0 {
		t.Fatal("no tokens under the grammar")
	}
	for _, top := range lps[0].Top {
		if !strings.HasPrefix(top.Token, "{") {
			t.Errorf("first token under the JSON grammar: %q among the top ones", top.Token)
		}
	}
	if _, err := m.Chat(context.Background(), hello, nil, greedy(2), func(o *ChatOptions) { o.TopLogprobs = 21; o.OnLogprob = func(TokenLogprob) error { return nil } }); !errors.Is(err, ErrBadOption) {
		t.Errorf("TopLogprobs 21: %v", err)
	}
	stop := errors.New("enough")
	if _, err := m.Chat(context.Background(), hello, nil, greedy(8), func(o *ChatOptions) { o.OnLogprob = func(TokenLogprob) error { return stop } }); !errors.Is(err, stop) {
		t.Errorf("OnLogprob's error: %v", err)
	}
}

// TestLazyGrammarRefusesWhatItCannotTake checks that a trigger handing the
// grammar text it does not accept ends the answer with an error, where
// llama.cpp alone would abort the process.
func TestLazyGrammarRefusesWhatItCannotTake(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	a := llama.Tokenize(m.vocab, "a", false, false)
	_, err := m.Chat(context.Background(), hello, nil, greedy(6), func(o *ChatOptions) {
		o.LogitBias = map[int]float32{int(a[0]): 100}
		o.Grammar, o.GrammarTriggers = `root ::= "x" [0-9]`, []string{"a"}
	})
	if !errors.Is(err, ErrBadOption) || !strings.Contains(err.Error(), "does not accept") {
		t.Errorf("error %v, want ErrBadOption saying the grammar does not accept the trigger's text", err)
	}
	// The model still answers.
	if tr := chat(t, m, hello, greedy(2)); tr.stats.GeneratedTokens == 0 {
		t.Error("no answer after the refusal")
	}
}

// TestOneBOS checks that a template writing bos_token itself (DeepSeek-R1's,
// Llama 3's) does not give the prompt two: the tokenizer adds one.
func TestOneBOS(t *testing.T) {
	for _, tmpl := range []string{testutil.DeepSeekR1Template, testutil.Llama3Template} {
		cfg := testutil.TinyConfig("qwen2")
		cfg.Template = tmpl
		m := loadModel(t, testutil.TinyModelWith(t, cfg))
		if m.tmpl.jinja == nil {
			t.Fatalf("%s: not rendered by the Jinja engine", m.Template())
		}
		tokens := m.tokenize(mustRender(t, m, hello))
		bos := llama.VocabBOS(m.vocab)
		if len(tokens) < 2 || tokens[0] != bos || tokens[1] == bos {
			t.Errorf("%s: the prompt starts with %v; want one BOS (%d)", m.Template(), tokens[:min(len(tokens), 3)], bos)
		}
		if tr := chat(t, m, hello, greedy(2)); tr.stats.GeneratedTokens == 0 {
			t.Errorf("%s: no answer", m.Template())
		}
	}
}
