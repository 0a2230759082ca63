package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/memload/memload/llm"
)

// serve serves h on a local port with m as its model.
func serve(t *testing.T, m Model, optFns ...func(*Handler)) string {
	t.Helper()
	h := &Handler{Name: "fake", MaxTokens: 100, Grammars: newFakeGrammars,
		Model: func(context.Context, func(string)) (Model, error) { return m, nil }}
	for _, fn := range optFns {
		fn(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}

// ask posts a chat request and returns the response's status and body.
func ask(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// chunks returns a stream's chunks, checking its framing.
func chunks(t *testing.T, body string) []chatResponse {
	t.Helper()
	if !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Fatalf("stream does not end with [DONE]: %q", body)
	}
	var out []chatResponse
	for _, ev := range strings.Split(strings.TrimSuffix(body, "data: [DONE]\n\n"), "\n\n") {
		if ev == "" || strings.HasPrefix(ev, ": ") {
			continue
		}
		d, ok := strings.CutPrefix(ev, "data: ")
		if !ok {
			t.Fatalf("malformed event %q", ev)
		}
		var c chatResponse
		dec := json.NewDecoder(strings.NewReader(d))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("chunk %q: %v", d, err)
		}
		out = append(out, c)
	}
	return out
}

func apiErr(t *testing.T, body string) Error {
	t.Helper()
	var e struct{ Error Error }
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("%q: %v", body, err)
	}
	return e.Error
}

func TestCachedTokens(t *testing.T) {
	url := serve(t, &fakeModel{template: "chatml", pieces: []string{"Hi", " there"}})
	code, body := ask(t, url, `{"messages":[{"role":"user","content":"Hello"}]}`)
	var a chatResponse
	if err := json.Unmarshal([]byte(body), &a); code != 200 || err != nil {
		t.Fatalf("%d %s", code, body)
	}
	if a.Usage.PromptTokensDetails.CachedTokens != 4 || !strings.Contains(body, `"prompt_tokens_details":{"cached_tokens":4}`) {
		t.Errorf("usage %s", body)
	}
	code, body = ask(t, url, `{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello"}]}`)
	cs := chunks(t, body)
	if u := cs[len(cs)-1].Usage; code != 200 || u == nil || u.PromptTokensDetails.CachedTokens != 4 || u.PromptTokens != 10 {
		t.Errorf("streamed usage: %d %s", code, body)
	}
}

// TestNUL: what the model generates, a NUL byte included, comes back in
// the next turn as it was; what the model's template cannot take is a 400
// naming the message, not a failed chat.
func TestNUL(t *testing.T) {
	m := &fakeModel{template: "chatml", pieces: []string{"a\x00", "b"}}
	url := serve(t, m)
	code, body := ask(t, url, `{"stream":true,"messages":[{"role":"user","content":"Hello"}]}`)
	var text strings.Builder
	for _, c := range chunks(t, body) {
		if len(c.Choices) == 1 && c.Choices[0].Delta != nil {
			text.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if code != 200 || text.String() != "a\x00b" {
		t.Fatalf("%d %q", code, text.String())
	}
	turn2, _ := json.Marshal(map[string]any{"messages": []map[string]string{
		{"role": "user", "content": "Hello"}, {"role": "assistant", "content": text.String()}, {"role": "user", "content": "Again"}}})
	if code, body := ask(t, url, string(turn2)); code != 200 {
		t.Fatalf("second turn: %d %s", code, body)
	}
	if msgs, _ := m.asked(); len(msgs) != 3 || msgs[1].Content != "a\x00b" {
		t.Errorf("the model was given %q", msgs)
	}

	m.err = fmt.Errorf("%w: chatml: message 1 holds a byte the template cannot take", errBadMessage)
	code, body = ask(t, url, string(turn2))
	if e := apiErr(t, body); code != 400 || e.Param != "messages" || !strings.Contains(e.Message, "message 1 holds a byte") {
		t.Errorf("a message the template refuses: %d %s", code, body)
	}
}

// TestBadOption: llm checks the options; its refusal is a 400 naming the
// request's field.
func TestBadOption(t *testing.T) {
	for _, tc := range []struct{ llmErr, param string }{
		{"TopP 3 is out of range: use 0 to 1", "top_p"},
		{"LogitBias token 99999 is not in the vocabulary", "logit_bias"},
		{"TopLogprobs 21 is out of range: use 0 to 20", "top_logprobs"},
		{"Temperature -1 is negative", "temperature"},
	} {
		url := serve(t, &fakeModel{template: "chatml", err: fmt.Errorf("%w: %s", llm.ErrBadOption, tc.llmErr)})
		code, body := ask(t, url, `{"messages":[{"role":"user","content":"Hello"}]}`)
		if e := apiErr(t, body); code != 400 || e.Param != tc.param || !strings.Contains(e.Message, tc.llmErr) {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.llmErr, code, body, tc.param)
		}
	}
}

func TestLogprobs(t *testing.T) {
	m := &fakeModel{template: "chatml", pieces: []string{"Hi", " é"}}
	url := serve(t, m)
	code, body := ask(t, url, `{"logprobs":true,"top_logprobs":2,"messages":[{"role":"user","content":"Hello"}]}`)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var a chatResponse
	json.Unmarshal([]byte(body), &a)
	lp := a.Choices[0].Logprobs
	if lp == nil || len(lp.Content) != 2 || lp.Content[1].Token != " é" || fmt.Sprint(lp.Content[1].Bytes) != "[32 195 169]" ||
		lp.Content[1].Logprob != -0.1 || len(lp.Content[1].TopLogprobs) != 2 || lp.Content[1].TopLogprobs[1].Token != "alt1" {
		t.Errorf("logprobs %s", body)
	}
	if !strings.Contains(body, `"bytes":[32,195,169]`) || !strings.Contains(body, `"refusal":null`) {
		t.Errorf("not OpenAI's shape: %s", body)
	}
	if _, o := m.asked(); o.TopLogprobs != 2 || o.OnLogprob == nil {
		t.Errorf("options %+v", o)
	}

	// Streamed: each chunk carries the tokens of its text.
	code, body = ask(t, url, `{"stream":true,"logprobs":true,"messages":[{"role":"user","content":"Hello"}]}`)
	var tokens []string
	for _, c := range chunks(t, body) {
		if len(c.Choices) == 1 && c.Choices[0].Logprobs != nil {
			for _, l := range c.Choices[0].Logprobs.Content {
				tokens = append(tokens, l.Token)
				if l.TopLogprobs == nil || len(l.TopLogprobs) != 0 {
					t.Errorf("top_logprobs %v, want []", l.TopLogprobs)
				}
			}
			if c.Choices[0].Delta.Content != strings.Join(tokens[len(tokens)-1:], "") {
				t.Errorf("chunk %+v: logprobs of other text", c.Choices[0])
			}
		}
	}
	if code != 200 || strings.Join(tokens, "|") != "Hi| é" {
		t.Errorf("streamed tokens %q: %s", tokens, body)
	}

	// Without logprobs, none; top_logprobs alone is refused.
	code, body = ask(t, url, `{"messages":[{"role":"user","content":"Hello"}]}`)
	if _, o := m.asked(); code != 200 || strings.Contains(body, "logprobs") || o.OnLogprob != nil {
		t.Errorf("logprobs not asked for: %s", body)
	}
	code, body = ask(t, url, `{"top_logprobs":2,"messages":[{"role":"user","content":"Hello"}]}`)
	if e := apiErr(t, body); code != 400 || e.Param != "top_logprobs" {
		t.Errorf("top_logprobs without logprobs: %d %s", code, body)
	}
}

// TestJSONSchema: response_format json_schema becomes the grammar of the
// schema; a keyword the converter cannot enforce is a 400 naming it.
func TestJSONSchema(t *testing.T) {
	m := &fakeModel{template: "chatml", pieces: []string{`{"a":`, `1}`}}
	url := serve(t, m)
	const schema = `{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":false}`
	code, body := ask(t, url, `{"messages":[{"role":"user","content":"Hello"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":`+schema+`}}}`)
	if code != 200 || !strings.Contains(body, `"content":"{\"a\":1}"`) {
		t.Fatalf("%d %s", code, body)
	}
	_, o := m.asked()
	if !strings.HasPrefix(o.Grammar, "root ::= j-object\n") || len(o.GrammarTriggers) != 0 {
		t.Errorf("grammar %q triggers %q", o.Grammar, o.GrammarTriggers)
	}

	// A thinking model reasons first.
	think := &fakeModel{template: "deepseek-r1", thinks: true, pieces: []string{"hm</think>", `{"a":1}`}}
	code, body = ask(t, serve(t, think), `{"messages":[{"role":"user","content":"Hello"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":`+schema+`}}}`)
	if _, o := think.asked(); code != 200 || !strings.Contains(o.Grammar, `"</think>"`) || !strings.Contains(body, `"reasoning_content":"hm"`) {
		t.Errorf("thinking: %d %s; grammar %q", code, body, o.Grammar)
	}

	for _, tc := range []struct{ body, param, want string }{
		{`"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","pattern":"^a"}}}`, "response_format.json_schema.schema", "unsupported keyword: pattern"},
		{`"response_format":{"type":"json_schema","json_schema":{"name":"x"}}`, "response_format.json_schema.schema", "needs json_schema.schema"},
		{`"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"s":{"type":"string","pattern":"x"}}}}}]`, "tools[0].function.parameters", "unsupported keyword: pattern"},
	} {
		code, body := ask(t, url, `{"messages":[{"role":"user","content":"Hello"}],`+tc.body+`}`)
		if e := apiErr(t, body); code != 400 || e.Param != tc.param || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.body, code, body, tc.param)
		}
	}

	// Without a converter, both are refused.
	url = serve(t, m, func(h *Handler) { h.Grammars = nil })
	code, body = ask(t, url, `{"messages":[{"role":"user","content":"Hello"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}}}`)
	if e := apiErr(t, body); code != 400 || !strings.Contains(e.Message, "no JSON-schema converter") {
		t.Errorf("no converter: %d %s", code, body)
	}
}

func TestErrorsFromModel(t *testing.T) {
	url := serve(t, nil, func(h *Handler) {
		h.Model = func(context.Context, func(string)) (Model, error) {
			return nil, &Error{Status: 503, Type: "server_error", Code: "model_loading", Message: "loading"}
		}
	})
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(`{"messages":[{"role":"user","content":"Hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" || resp.Header.Get("X-Should-Retry") != "true" {
		t.Errorf("%s %v", resp.Status, resp.Header)
	}
	url = serve(t, &fakeModel{err: errors.New("boom")})
	if code, body := ask(t, url, `{"messages":[{"role":"user","content":"Hi"}]}`); code != 500 || !strings.Contains(body, "generation failed: boom") {
		t.Errorf("%d %s", code, body)
	}
}
