package openai

import (
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
