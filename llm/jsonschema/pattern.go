package jsonschema

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// pattern converts a string's pattern, an ECMA-262 regular expression
// that must match somewhere in the string, into a rule body for the JSON
// string. The grammar writes each character as JSON text, escaping quotes,
// backslashes and control characters, so the decoded string matches the
// expression. Supported: literals, ., classes, \d \w \s and their
// negations, groups, alternation, greedy or lazy quantifiers, and ^ and $
// at the ends of the top-level alternatives. Anything else (backreferences,
// lookaround, \b, \p{...}) is refused: a grammar cannot check it, or
// llama.cpp's converter would mistranslate it.
func (c *converter) pattern(src, ptr string) (string, error) {
	p := &rxParser{src: []rune(src), c: c, ptr: ptr}
	if !utf8.ValidString(src) {
		return "", p.fail(ErrInvalid, "is not valid UTF-8")
	}
	body, err := p.alternation(true)
	if err != nil {
		return "", err
	}
	if p.i < len(p.src) {
		return "", p.fail(ErrInvalid, "has an unmatched )")
	}
	c.prim("char")
	c.prim("space")
	return `"\"" (` + body + `) "\"" space`, nil
}

type rxParser struct {
	src []rune
	i   int
	c   *converter
	ptr string
}

func (p *rxParser) fail(sentinel error, format string, args ...any) error {
	return p.c.errorf(p.ptr, "pattern", sentinel, "%q %s", string(p.src), fmt.Sprintf(format, args...))
}

func (p *rxParser) peek(s string) bool {
	return strings.HasPrefix(string(p.src[p.i:]), s)
}

// alternation parses alternatives up to ) or the end. At the top level,
// each alternative may be anchored by ^ and $; unanchored ends match any
// characters, as the pattern need only match part of the string.
func (p *rxParser) alternation(top bool) (string, error) {
	var alts []string
	for {
		start := top && p.peek("^")
		if start {
			p.i++
		}
		seq, end, err := p.sequence(top)
		if err != nil {
			return "", err
		}
		if top && !start {
			seq = "char* " + seq
		}
		if top && !end {
			seq += " char*"
		}
		alts = append(alts, strings.TrimSpace(seq))
		if !p.peek("|") {
			break
		}
		p.i++
	}
	return strings.Join(alts, " | "), nil
}

// sequence parses atoms up to |, ) or the end; end reports a final $.
func (p *rxParser) sequence(top bool) (seq string, end bool, err error) {
	var parts []string
	for p.i < len(p.src) {
		r := p.src[p.i]
		if r == '|' || r == ')' {
			break
		}
		if r == '$' {
			p.i++
			if top && (p.i == len(p.src) || p.src[p.i] == '|') {
				end = true
				break
			}
			return "", false, p.fail(ErrUnsupported, "has $ inside: only at the end of an alternative")
		}
		if r == '^' {
			return "", false, p.fail(ErrUnsupported, "has ^ inside: only at the start of an alternative")
		}
		atom, err := p.atom()
		if err != nil {
			return "", false, err
		}
		atom, err = p.quantify(atom)
		if err != nil {
			return "", false, err
		}
		parts = append(parts, atom)
	}
	if len(parts) == 0 {
		return `""`, end, nil
	}
	return strings.Join(parts, " "), end, nil
}

func (p *rxParser) atom() (string, error) {
	r := p.src[p.i]
	p.i++
	switch r {
	case '(':
		if p.peek("?") {
			if !p.peek("?:") {
				return "", p.fail(ErrUnsupported, "has a lookaround or named group: only (...) and (?:...) are supported")
			}
			p.i += 2
		}
		inner, err := p.alternation(false)
		if err != nil {
			return "", err
		}
		if !p.peek(")") {
			return "", p.fail(ErrInvalid, "has an unclosed (")
		}
		p.i++
		return "(" + inner + ")", nil
	case '[':
		set, err := p.class()
		if err != nil {
			return "", err
		}
		return p.emit(set)
	case '.':
		// ECMA's dot: anything but line terminators.
		return p.emit(negate(ranges{{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}}))
	case '\\':
		set, err := p.escape(false)
		if err != nil {
			return "", err
		}
		return p.emit(set)
	case '*', '+', '?', '{', '}', ']':
		return "", p.fail(ErrUnsupported, "has %q with nothing to repeat or match: escape it", r)
	}
	return p.emit(ranges{{r, r}})
}

// quantify applies a quantifier after an atom, if there is one.
func (p *rxParser) quantify(atom string) (string, error) {
	if p.i >= len(p.src) {
		return atom, nil
	}
	var q string
	switch p.src[p.i] {
	case '*', '+', '?':
		q = string(p.src[p.i])
		p.i++
	case '{':
		end := slices.Index(p.src[p.i:], '}')
		if end < 0 {
			return "", p.fail(ErrUnsupported, "has a { that is not a quantifier: escape it")
		}
		body := string(p.src[p.i+1 : p.i+end])
		lo, hi, ok := strings.Cut(body, ",")
		min, err1 := strconv.Atoi(lo)
		max, err2 := min, error(nil)
		if ok {
			max = -1
			if hi != "" {
				max, err2 = strconv.Atoi(hi)
			}
		}
		if err1 != nil || err2 != nil || min < 0 || (max >= 0 && max < min) {
			return "", p.fail(ErrUnsupported, "has a quantifier {%s} that is not {n}, {n,} or {n,m}", body)
		}
		if min > maxRepeat || max > maxRepeat {
			return "", p.fail(ErrUnsupported, "repeats more than %d times", maxRepeat)
		}
		p.i += end + 1
		q = "{" + strconv.Itoa(min)
		if max != min {
			q += ","
			if max >= 0 {
				q += strconv.Itoa(max)
			}
		}
		q += "}"
	default:
		return atom, nil
	}
	if p.peek("?") { // lazy: the same strings match
		p.i++
	}
	if p.i < len(p.src) && strings.ContainsRune("*+?{", p.src[p.i]) {
		return "", p.fail(ErrUnsupported, "has a repeated quantifier")
	}
	return "(" + atom + ")" + q, nil
}

// class parses a character class after its [.
func (p *rxParser) class() (ranges, error) {
	neg := p.peek("^")
	if neg {
		p.i++
	}
	var set ranges
	first := true
	for {
		if p.i >= len(p.src) {
			return nil, p.fail(ErrInvalid, "has an unclosed [")
		}
		r := p.src[p.i]
		if r == ']' && !first {
			p.i++
			break
		}
		if r == ']' {
			return nil, p.fail(ErrUnsupported, "has an empty class []")
		}
		first = false
		lo, err := p.classAtom()
		if err != nil {
			return nil, err
		}
		if len(lo) == 1 && lo[0][0] == lo[0][1] && p.peek("-") && p.i+1 < len(p.src) && p.src[p.i+1] != ']' {
			p.i++
			hi, err := p.classAtom()
			if err != nil {
				return nil, err
			}
			if len(hi) != 1 || hi[0][0] != hi[0][1] || hi[0][0] < lo[0][0] {
				return nil, p.fail(ErrInvalid, "has an invalid range in a class")
			}
			set = append(set, [2]rune{lo[0][0], hi[0][0]})
			continue
		}
		set = append(set, lo...)
	}
	set = set.normal()
	if neg {
		set = negate(set)
	}
	return set, nil
}

func (p *rxParser) classAtom() (ranges, error) {
	r := p.src[p.i]
	p.i++
	if r == '\\' {
		return p.escape(true)
	}
	if r == '[' {
		return nil, p.fail(ErrUnsupported, "has [ inside a class: escape it")
	}
	return ranges{{r, r}}, nil
}

// escape parses what follows a backslash.
func (p *rxParser) escape(inClass bool) (ranges, error) {
	if p.i >= len(p.src) {
		return nil, p.fail(ErrInvalid, "ends with a backslash")
	}
	r := p.src[p.i]
	p.i++
	digit := ranges{{'0', '9'}}
	word := ranges{{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}
	// ECMA's white space and line terminators.
	space := ranges{{'\t', '\r'}, {' ', ' '}, {0xa0, 0xa0}, {0x1680, 0x1680}, {0x2000, 0x200a},
		{0x2028, 0x2029}, {0x202f, 0x202f}, {0x205f, 0x205f}, {0x3000, 0x3000}, {0xfeff, 0xfeff}}
	switch r {
	case 'd':
		return digit, nil
	case 'D':
		return negate(digit), nil
	case 'w':
		return word, nil
	case 'W':
		return negate(word), nil
	case 's':
		return space, nil
	case 'S':
		return negate(space), nil
	case 'n':
		return ranges{{'\n', '\n'}}, nil
	case 't':
		return ranges{{'\t', '\t'}}, nil
	case 'r':
		return ranges{{'\r', '\r'}}, nil
	case 'f':
		return ranges{{'\f', '\f'}}, nil
	case 'v':
		return ranges{{'\v', '\v'}}, nil
	case '0':
		if p.i < len(p.src) && p.src[p.i] >= '0' && p.src[p.i] <= '9' {
			return nil, p.fail(ErrUnsupported, "has an octal escape")
		}
		return ranges{{0, 0}}, nil
	case 'x', 'u':
		n := map[rune]int{'x': 2, 'u': 4}[r]
		if p.i+n > len(p.src) {
			return nil, p.fail(ErrInvalid, "has a short \\%c escape", r)
		}
		v, err := strconv.ParseUint(string(p.src[p.i:p.i+n]), 16, 32)
		if err != nil || (v >= 0xd800 && v <= 0xdfff) {
			return nil, p.fail(ErrUnsupported, "has a \\%c escape that is not a character", r)
		}
		p.i += n
		return ranges{{rune(v), rune(v)}}, nil
	case 'b':
		if inClass {
			return ranges{{'\b', '\b'}}, nil
		}
	}
	if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '1' && r <= '9' {
		return nil, p.fail(ErrUnsupported, "has the escape \\%c (word boundaries, backreferences, \\p{...} and the like cannot be checked by a grammar)", r)
	}
	return ranges{{r, r}}, nil // an escaped punctuation character
}

// emit returns a rule expression matching the JSON text of one character
// of set.
func (p *rxParser) emit(set ranges) (string, error) {
	// Characters the JSON text holds raw: those of the char rule.
	raw := ranges{{' ', '!'}, {'#', '['}, {']', '~'}, {0x80, 0xd7ff}, {0xe000, 0x10ffff}}
	var alts []string
	if in := set.intersect(raw); len(in) > 0 {
		var b strings.Builder
		b.WriteByte('[')
		for _, r := range in {
			b.WriteString(classEscape(r[0]))
			if r[1] != r[0] {
				b.WriteString("-" + classEscape(r[1]))
			}
		}
		b.WriteByte(']')
		alts = append(alts, b.String())
	}
	// The others, escaped.
	for _, r := range append([]rune{'"', '\\', 0x7f}, controls()...) {
		if set.has(r) {
			var b strings.Builder
			quoteJSON(&b, string(r))
			text := b.String()
			alts = append(alts, Literal(text[1:len(text)-1]))
		}
	}
	if len(alts) == 0 {
		return "", p.fail(ErrUnsupported, "has a class that matches no character a JSON string can hold")
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return "(" + strings.Join(alts, " | ") + ")", nil
}

func controls() []rune {
	out := make([]rune, 0x20)
	for i := range out {
		out[i] = rune(i)
	}
	return out
}

func classEscape(r rune) string {
	switch {
	case r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
		return string(r)
	case r <= 0xff:
		return fmt.Sprintf(`\x%02X`, r)
	case r <= 0xffff:
		return fmt.Sprintf(`\u%04X`, r)
	}
	return fmt.Sprintf(`\U%08X`, r)
}

// ranges is a set of characters as inclusive ranges.
type ranges [][2]rune

// normal sorts and merges the ranges.
func (s ranges) normal() ranges {
	s = slices.Clone(s)
	slices.SortFunc(s, func(a, b [2]rune) int { return int(a[0]) - int(b[0]) })
	var out ranges
	for _, r := range s {
		if n := len(out); n > 0 && r[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

func negate(s ranges) ranges {
	var out ranges
	next := rune(0)
	for _, r := range s.normal() {
		if r[0] > next {
			out = append(out, [2]rune{next, r[0] - 1})
		}
		next = r[1] + 1
	}
	if next <= 0x10ffff {
		out = append(out, [2]rune{next, 0x10ffff})
	}
	return out
}

func (s ranges) intersect(t ranges) ranges {
	var out ranges
	for _, a := range s.normal() {
		for _, b := range t.normal() {
			lo, hi := max(a[0], b[0]), min(a[1], b[1])
			if lo <= hi {
				out = append(out, [2]rune{lo, hi})
			}
		}
	}
	return out.normal()
}

func (s ranges) has(r rune) bool {
	for _, x := range s {
		if r >= x[0] && r <= x[1] {
			return true
		}
	}
	return false
}
