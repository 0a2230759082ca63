package llm

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"slices"
	"strings"
	"unicode/utf8"
)

// ecmaScript rewrites a Go regular expression as the ECMAScript one
// llama.cpp's std::regex matches the same way. llama.cpp compiles trigger
// patterns with std::regex, which throws on syntax it does not know (Go's
// flags, \pL, \z, named groups, …) and so aborts the process; writing the
// pattern out from Go's parse of it gives std::regex only syntax it reads.
// std::regex matches bytes: a non-ASCII character is its UTF-8 bytes, and
// character classes may hold only ASCII characters, or all the non-ASCII
// ones (as [^"] does).
func ecmaScript(p string) (string, error) {
	re, err := syntax.Parse(p, syntax.Perl)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := writeECMA(&b, re); err != nil {
		return "", err
	}
	return b.String(), nil
}

func writeECMA(b *strings.Builder, re *syntax.Regexp) error {
	if re.Flags&syntax.FoldCase != 0 && (re.Op == syntax.OpLiteral || re.Op == syntax.OpCharClass) {
		return errors.New("case-insensitive matching is not supported")
	}
	switch re.Op {
	case syntax.OpNoMatch:
		b.WriteString("[^\\s\\S]")
	case syntax.OpEmptyMatch:
		b.WriteString("(?:)")
	case syntax.OpLiteral:
		for _, r := range re.Rune {
			writeRune(b, r)
		}
	case syntax.OpCharClass:
		return writeClass(b, re.Rune)
	case syntax.OpAnyCharNotNL:
		b.WriteString("[^\\n]")
	case syntax.OpAnyChar:
		b.WriteString("[\\s\\S]")
	case syntax.OpBeginText:
		b.WriteString("^")
	case syntax.OpEndText:
		b.WriteString("$")
	case syntax.OpWordBoundary:
		b.WriteString("\\b")
	case syntax.OpNoWordBoundary:
		b.WriteString("\\B")
	case syntax.OpCapture:
		b.WriteString("(")
		if err := writeECMA(b, re.Sub[0]); err != nil {
			return err
		}
		b.WriteString(")")
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest, syntax.OpRepeat:
		b.WriteString("(?:")
		if err := writeECMA(b, re.Sub[0]); err != nil {
			return err
		}
		b.WriteString(")")
		switch {
		case re.Op == syntax.OpStar:
			b.WriteString("*")
		case re.Op == syntax.OpPlus:
			b.WriteString("+")
		case re.Op == syntax.OpQuest:
			b.WriteString("?")
		case re.Max == -1:
			fmt.Fprintf(b, "{%d,}", re.Min)
		default:
			fmt.Fprintf(b, "{%d,%d}", re.Min, re.Max)
		}
		if re.Flags&syntax.NonGreedy != 0 {
			b.WriteString("?")
		}
	case syntax.OpConcat:
		for _, sub := range re.Sub {
			if err := writeECMA(b, sub); err != nil {
				return err
			}
		}
	case syntax.OpAlternate:
		b.WriteString("(?:")
		for i, sub := range re.Sub {
			if i > 0 {
				b.WriteString("|")
			}
			if err := writeECMA(b, sub); err != nil {
				return err
			}
		}
		b.WriteString(")")
	default: // line anchors under (?m)
		return fmt.Errorf("%s is not supported", re)
	}
	return nil
}

// writeRune writes r as a literal: ASCII letters and digits as they are,
// other ASCII characters as \xHH, others as their UTF-8 bytes in a group.
func writeRune(b *strings.Builder, r rune) {
	switch {
	case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9':
		b.WriteRune(r)
	case r < utf8.RuneSelf:
		fmt.Fprintf(b, "\\x%02X", r)
	default:
		b.WriteString("(?:")
		b.WriteRune(r)
		b.WriteString(")")
	}
}

// writeClass writes a character class of ASCII ranges, or the negation of
// one when the class holds every non-ASCII character.
func writeClass(b *strings.Builder, ranges []rune) error {
	var ascii [128]bool
	nonASCII := 0 // how many non-ASCII code points the class holds
	for i := 0; i < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		for r := lo; r <= min(hi, 127); r++ {
			ascii[r] = true
		}
		if hi > 127 {
			nonASCII += int(hi - max(lo, 128) + 1)
		}
	}
	neg := false
	switch nonASCII {
	case 0:
	case utf8.MaxRune - 127:
		neg = true
		for i := range ascii {
			ascii[i] = !ascii[i]
		}
	default:
		return errors.New("character classes may hold ASCII characters, or all non-ASCII ones, not some")
	}
	if !neg && !slices.Contains(ascii[:], true) {
		b.WriteString("[^\\s\\S]") // an empty class: nothing matches
		return nil
	}
	b.WriteString("[")
	if neg {
		b.WriteString("^")
	}
	for r := 0; r < 128; r++ {
		if !ascii[r] {
			continue
		}
		end := r
		for end+1 < 128 && ascii[end+1] {
			end++
		}
		fmt.Fprintf(b, "\\x%02X", r)
		if end > r {
			fmt.Fprintf(b, "-\\x%02X", end)
		}
		r = end
	}
	b.WriteString("]")
	return nil
}
