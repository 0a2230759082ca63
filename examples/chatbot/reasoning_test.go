package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestReasoningSplitter(t *testing.T) {
	for _, tc := range []struct {
		name, text         string
		reasoning, content string
	}{
		{"prompt opened the block", "Let me think.\nThe sky scatters blue.\n</think>\n\nBecause of Rayleigh scattering.", "Let me think.\nThe sky scatters blue.", "Because of Rayleigh scattering."},
		{"model opens the block", "<think>\nhmm\n</think>\n\nYes.", "hmm", "Yes."},
		{"leading whitespace before the tag", "\n <think>a</think>b", "a", "b"},
		{"empty reasoning", "<think>\n\n</think>\n\nHello", "", "Hello"},
		{"never closed: all reasoning", "still thinking when max_tokens hit  \n", "still thinking when max_tokens hit", ""},
		{"an unfinished closing tag stays reasoning", "thinking </thi", "thinking </thi", ""},
		{"only the first closing tag splits", "a</think>b</think>c", "a", "b</think>c"},
		{"answer keeps inner whitespace", "r</think>\n\nline 1\n\nline 2\n", "r", "line 1\n\nline 2\n"},
		{"a tag-like start that is not the tag", "<thinking>x</think>y", "<thinking>x", "y"},
		{"nothing", "", "", ""},
		{"unicode", "思考…</think>答え", "思考…", "答え"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Every way of cutting the text into pieces gives the same
			// split: one piece, single bytes, and every two-piece cut.
			cuts := [][]string{{tc.text}, strings.Split(tc.text, "")}
			for i := 1; i < len(tc.text); i++ {
				cuts = append(cuts, []string{tc.text[:i], tc.text[i:]})
			}
			for _, pieces := range cuts {
				var r, c strings.Builder
				var events int
				s := reasoningSplitter{emit: func(reasoning, content string) error {
					events++
					if reasoning != "" && content != "" {
						t.Errorf("one event with both reasoning %q and content %q", reasoning, content)
					}
					r.WriteString(reasoning)
					c.WriteString(content)
					return nil
				}}
				for _, p := range pieces {
					if err := s.write(p); err != nil {
						t.Fatal(err)
					}
				}
				if err := s.flush(); err != nil {
					t.Fatal(err)
				}
				if r.String() != tc.reasoning || c.String() != tc.content {
					t.Fatalf("pieces %q: reasoning %q content %q, want %q %q", pieces, r.String(), c.String(), tc.reasoning, tc.content)
				}
			}
		})
	}
}

func TestReasoningSplitterStreams(t *testing.T) {
	// Reasoning and answer go out as they come, not at the end.
	var got []string
	s := reasoningSplitter{emit: func(r, c string) error { got = append(got, "r:"+r+"|c:"+c); return nil }}
	for _, p := range []string{"Step", " one", ".\n", "</", "think>", "\n\n", "An", "swer"} {
		s.write(p)
	}
	s.flush()
	want := []string{"r:Step|c:", "r: one|c:", "r:.|c:", "r:|c:An", "r:|c:swer"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("events %q, want %q", got, want)
	}
}

// TestReasoningThroughHandler: with a thinking template, the answer's
// text goes through the splitter into reasoning_content and content,
// streamed and not, and reasoning_format "none" keeps the raw text. The
// generated model's tokens are random (they never close the reasoning),
// so the split is compared with the splitter's own on the raw greedy text,
// whose cases TestReasoningSplitter covers.
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
	var wantR, wantC strings.Builder
	s := reasoningSplitter{emit: func(r, c string) error { wantR.WriteString(r); wantC.WriteString(c); return nil }}
	s.write(raw.Content)
	s.flush()
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
