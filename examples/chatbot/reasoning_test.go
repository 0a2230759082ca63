package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode"
)

// TestReasoningThroughHandler: with a thinking template, the answer's
// text goes through the splitter into reasoning_content and content,
// streamed and not, and reasoning_format "none" keeps the raw text. The
// generated model's tokens are random (they never close the reasoning),
// so the split is compared with splitReasoning's on the raw greedy text,
// whose cases the openai package's TestReasoningSplitter covers.
func TestReasoningThroughHandler(t *testing.T) {
	ts := newTestServer(t, testConfig(t, map[string]string{"CHAT_TEMPLATE": "deepseek-r1"}))
	const ask = `"messages":[{"role":"user","content":"Why?"}],"temperature":0,"max_tokens":16`
	ask1 := func(body string) responseMessage {
		t.Helper()
		resp := post(t, context.Background(), ts.url, "{"+body+"}")
		defer resp.Body.Close()
		a := decode[chatResponse](t, resp.Body)
		if resp.StatusCode != 200 || len(a.Choices) != 1 {
			t.Fatalf("%s %+v", resp.Status, a)
		}
		return *a.Choices[0].Message
	}
	raw := ask1(ask + `,"reasoning_format":"none"`)
	if raw.ReasoningContent != "" || raw.Content == "" {
		t.Fatalf("reasoning_format none: %+v", raw)
	}
	wantR, wantC := splitReasoning(raw.Content)
	if wantR.Len() == 0 {
		t.Fatalf("no reasoning in %q", raw.Content)
	}

	split := ask1(ask)
	if split.ReasoningContent != wantR.String() || split.Content != wantC.String() {
		t.Errorf("split %+v, want reasoning %q content %q", split, wantR.String(), wantC.String())
	}
	resp := post(t, context.Background(), ts.url, `{"stream":true,`+ask+`}`)
	defer resp.Body.Close()
	var r, c strings.Builder
	for _, e := range readSSE(t, resp.Body) {
		if e.data == "" || e.data == "[DONE]" {
			continue
		}
		var ch chatResponse
		if err := json.Unmarshal([]byte(e.data), &ch); err != nil {
			t.Fatal(err)
		}
		if len(ch.Choices) == 1 {
			r.WriteString(ch.Choices[0].Delta.ReasoningContent)
			c.WriteString(ch.Choices[0].Delta.Content)
		}
	}
	if r.String() != wantR.String() || c.String() != wantC.String() {
		t.Errorf("streamed reasoning %q content %q, want %q %q", r.String(), c.String(), wantR.String(), wantC.String())
	}

	// A model that does not think keeps its text in content.
	plain := newTestServer(t, testConfig(t, nil))
	resp2 := post(t, context.Background(), plain.url, "{"+ask+"}")
	defer resp2.Body.Close()
	if a := decode[chatResponse](t, resp2.Body); a.Choices[0].Message.ReasoningContent != "" || a.Choices[0].Message.Content == "" {
		t.Errorf("chatml answer %+v", a.Choices[0].Message)
	}
}

// splitReasoning splits a whole text as llama.cpp's reasoning_format
// "deepseek" does: up to the first "</think>" (without an opening
// "<think>") is reasoning, the rest the answer, both trimmed.
func splitReasoning(text string) (r, c *strings.Builder) {
	r, c = &strings.Builder{}, &strings.Builder{}
	text = strings.TrimLeftFunc(text, unicode.IsSpace)
	text = strings.TrimPrefix(text, "<think>")
	before, after, found := strings.Cut(text, "</think>")
	r.WriteString(strings.TrimSpace(before))
	if found {
		c.WriteString(strings.TrimLeftFunc(after, unicode.IsSpace))
	}
	return r, c
}
