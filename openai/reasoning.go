package openai

import (
	"strings"
	"unicode"
)

const (
	thinkOpen  = "<think>"
	thinkClose = "</think>"
)

// reasoningSplitter separates a thinking model's text, streamed in pieces,
// into reasoning and answer, as llama.cpp's server does with its
// reasoning_format "deepseek": everything up to "</think>" is reasoning
// (an opening "<think>" is dropped: newer templates put it in the prompt,
// older models generate it), the rest is the answer. Whitespace around the
// two parts is trimmed. Text that may be the start of a tag, or trailing
// whitespace, is held back until the next piece tells.
type reasoningSplitter struct {
	emit    func(reasoning, content string) error
	state   splitState
	opened  bool // the text's own <think> is dropped
	pending string
}

type splitState int

const (
	splitStart   splitState = iota // nothing but whitespace yet
	splitThink                     // inside the reasoning
	splitAnswer0                   // after </think>, nothing but whitespace yet
	splitAnswer                    // in the answer
)

// write takes the next piece of text.
func (s *reasoningSplitter) write(piece string) error {
	s.pending += piece
	for {
		switch s.state {
		case splitStart:
			s.pending = strings.TrimLeftFunc(s.pending, unicode.IsSpace)
			switch {
			case s.pending == "":
				return nil
			case s.opened:
			case strings.HasPrefix(s.pending, thinkOpen):
				s.pending = s.pending[len(thinkOpen):]
				s.opened = true
				continue // and trim the whitespace after it
			case strings.HasPrefix(thinkOpen, s.pending):
				return nil // "<thi": wait
			}
			s.state = splitThink
		case splitThink:
			if i := strings.Index(s.pending, thinkClose); i >= 0 {
				r := strings.TrimRightFunc(s.pending[:i], unicode.IsSpace)
				s.pending = s.pending[i+len(thinkClose):]
				s.state = splitAnswer0
				if err := s.send(r, ""); err != nil {
					return err
				}
				continue
			}
			// Hold back a partial tag and the whitespace before it.
			cut := len(s.pending) - prefixOverlap(s.pending, thinkClose)
			r := strings.TrimRightFunc(s.pending[:cut], unicode.IsSpace)
			s.pending = s.pending[len(r):]
			return s.send(r, "")
		case splitAnswer0:
			s.pending = strings.TrimLeftFunc(s.pending, unicode.IsSpace)
			if s.pending == "" {
				return nil
			}
			s.state = splitAnswer
		case splitAnswer:
			c := s.pending
			s.pending = ""
			return s.send("", c)
		}
	}
}

// flush passes on what is held back, at the end of the text.
func (s *reasoningSplitter) flush() error {
	p := s.pending
	s.pending = ""
	switch s.state {
	case splitStart, splitThink:
		return s.send(strings.TrimRightFunc(p, unicode.IsSpace), "")
	case splitAnswer:
		return s.send("", p)
	}
	return nil
}

func (s *reasoningSplitter) send(reasoning, content string) error {
	if reasoning == "" && content == "" {
		return nil
	}
	return s.emit(reasoning, content)
}

// prefixOverlap returns the length of the longest suffix of s that is a
// proper prefix of tag.
func prefixOverlap(s, tag string) int {
	for n := min(len(s), len(tag)-1); n > 0; n-- {
		if strings.HasSuffix(s, tag[:n]) {
			return n
		}
	}
	return 0
}
