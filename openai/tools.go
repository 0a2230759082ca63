package openai

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// toolFormat is how a template family writes tool calls: the text that
// opens them, how to read them as they stream, and the grammar that makes
// the model write them so.
type toolFormat struct {
	name     string
	families []string // Model.Template() values, or prefixes ending in "*"
	// trigger opens the calls. Llama 3's calls have none: they are a JSON
	// object that is the whole answer, so atStart.
	trigger string
	atStart bool
	// parse reads the calls in s, which begins with the trigger (or the
	// answer, atStart): see sectionScan.
	parse func(s string) sectionScan
	// call is the grammar of one call of a function whose arguments follow
	// the rule args; sep joins calls, open and close wrap them.
	call              func(name, args string) string
	open, sep, close  string
	triggerPattern    string
	manyCallsByRepeat bool // the whole open...close block repeats per call
}

// sectionScan is what a parse of a calls section found so far.
type sectionScan struct {
	calls []scannedCall
	end   int  // where the section ends, once that is known; else -1
	bad   bool // the text is not calls after all
}

type scannedCall struct {
	name     string
	nameDone bool
	args     string // the raw arguments so far
	argsDone bool
}

var toolFormats = []*toolFormat{
	{
		// Hermes 2 Pro, Qwen 2.5 and Qwen 3: <tool_call>{"name": ..., "arguments": {...}}</tool_call>.
		name: "hermes", families: []string{"chatml", "hermes*", "qwen*"},
		trigger: "<tool_call>", parse: parseHermes,
		call: func(name, args string) string {
			return fmt.Sprintf(`"{\"name\": " %s ", \"arguments\": " %s "}"`, quote(quoteJSON(name)), args)
		},
		open: `"<tool_call>\n"`, close: `"\n</tool_call>"`, sep: `"\n"`, manyCallsByRepeat: true,
	},
	{
		// Llama 3.1-3.3: the answer is {"name": ..., "parameters": {...}}, maybe after <|python_tag|>.
		name: "llama3", families: []string{"llama3*"},
		atStart: true, parse: parseLlama3,
		call: func(name, args string) string {
			return fmt.Sprintf(`"{\"name\": " %s ", \"parameters\": " %s "}"`, quote(quoteJSON(name)), args)
		},
		open: `[ \t\n]*`, sep: `"; "`, triggerPattern: `^\s*\{`,
	},
	{
		// Mistral v7 (Ministral 3, Mistral Small 3.x): [TOOL_CALLS]name[ARGS]{...}, repeated.
		name: "mistral", families: []string{"mistral-v7*"},
		trigger: "[TOOL_CALLS]", parse: parseMistral,
		call: func(name, args string) string {
			return fmt.Sprintf(`%s %s`, quote("[TOOL_CALLS]"+name+"[ARGS]"), args)
		},
		manyCallsByRepeat: true,
	},
	{
		// Mistral's earlier templates (Nemo's v3-tekken): [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...].
		name: "mistral", families: []string{"mistral*"},
		trigger: "[TOOL_CALLS]", parse: parseMistral,
		call: func(name, args string) string {
			return fmt.Sprintf(`"{\"name\": " %s ", \"arguments\": " %s "}"`, quote(quoteJSON(name)), args)
		},
		open: `"[TOOL_CALLS]["`, sep: `", "`, close: `"]"`,
	},
	{
		// DeepSeek R1 and V3: tool tokens around function<｜tool▁sep｜>name and a ```json block.
		name: "deepseek", families: []string{"deepseek*"},
		trigger: dsCallsBegin, parse: parseDeepSeek,
		call: func(name, args string) string {
			return fmt.Sprintf(`%s %s %s`, quote(dsCallBegin+"function"+dsSep+name+"\n```json\n"), args, quote("\n```"+dsCallEnd))
		},
		open: quote(dsCallsBegin), close: quote(dsCallsEnd),
	},
}

const (
	dsCallsBegin = "<｜tool▁calls▁begin｜>"
	dsCallsEnd   = "<｜tool▁calls▁end｜>"
	dsCallBegin  = "<｜tool▁call▁begin｜>"
	dsCallEnd    = "<｜tool▁call▁end｜>"
	dsSep        = "<｜tool▁sep｜>"
)

// formatOf returns the tool-call format of a template family, or nil.
func formatOf(family string) *toolFormat {
	for _, f := range toolFormats {
		for _, p := range f.families {
			if p == family || strings.HasSuffix(p, "*") && strings.HasPrefix(family, strings.TrimSuffix(p, "*")) {
				return f
			}
		}
	}
	return nil
}

// toolFamilies lists the template families that get tools.
func toolFamilies() []string {
	var out []string
	for _, f := range toolFormats {
		out = append(out, f.families...)
	}
	return out
}

// grammar returns the grammar of the calls: from the first token for
// "required" and a named function (after the reasoning, for a thinking
// model), lazily from the format's trigger for "auto".
func (f *toolFormat) grammar(b GrammarBuilder, tools []Tool, choice, only string, parallel, thinks bool) (string, []string, error) {
	var alts []string
	for _, t := range tools {
		if choice == "function" && t.Name != only {
			continue
		}
		args, err := b.Schema(t.Parameters)
		if err != nil {
			return "", nil, fmt.Errorf("function %s: %w", t.Name, err)
		}
		alts = append(alts, b.Rule("call-"+ruleName(t.Name), f.call(t.Name, args)))
	}
	call := b.Rule("call", strings.Join(alts, " | "))
	var body string
	switch {
	case f.manyCallsByRepeat && parallel:
		block := b.Rule("call-block", f.open+" "+call+" "+f.close)
		body = block + " (" + f.sep + " " + block + ")*"
	case f.manyCallsByRepeat:
		body = f.open + " " + call + " " + f.close
	case parallel:
		body = f.open + " " + call + " (" + f.sep + " " + call + ")* " + f.close
	default:
		body = f.open + " " + call + " " + f.close
	}
	calls := b.Rule("tool-calls", strings.TrimSpace(body))
	if choice == "auto" {
		pattern := f.triggerPattern
		if pattern == "" {
			pattern = regexp.QuoteMeta(f.trigger)
		}
		return b.Grammar(calls), []string{pattern}, nil
	}
	if thinks {
		calls = b.Rule("reasoned-calls", thinkRule(b)+" "+calls)
	}
	return b.Grammar(calls), nil, nil
}

// thinkRule is the reasoning a thinking model writes before its answer:
// text up to "</think>" (without "</" inside) and the whitespace after.
func thinkRule(b GrammarBuilder) string {
	return b.Rule("reasoning", `( [^<] | "<" [^/] )* "</think>" [ \t\n]*`)
}

// ruleName makes a function's name a GBNF rule name.
func ruleName(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return r
		}
		return '-'
	}, s)
}

// quote returns s as a GBNF literal.
func quote(s string) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case '\n':
			sb.WriteString(`\n`)
		case '\r':
			sb.WriteString(`\r`)
		case '\t':
			sb.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(&sb, `\x%02X`, r)
			} else {
				sb.WriteRune(r)
			}
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// toolSplitter separates tool calls from an answer's text, streamed in
// pieces: text before the calls goes to content, each call to call, first
// with its id and name, then its arguments in pieces as they come. Text
// that may be the start of the trigger is held back until the next piece
// tells; text that turns out to be no call after all goes to content.
type toolSplitter struct {
	f          *toolFormat
	content    func(string) error
	call       func(index int, id, name, args string) error
	mistralIDs bool
	names      map[string]bool // the tools

	state   int // 0: content, 1: calls, 2: after the calls or no calls
	pending string
	section string
	sent    []sentCall
	calls   int // calls started
}

type sentCall struct {
	id   string
	args int // bytes of arguments sent
}

func (s *toolSplitter) write(piece string) error {
	switch s.state {
	case 1:
		s.section += piece
		return s.scan(false)
	case 2:
		return s.content(piece)
	}
	s.pending += piece
	if s.f.atStart {
		t := strings.TrimLeftFunc(s.pending, unicode.IsSpace)
		switch {
		case t == "" || strings.HasPrefix(llama3Tag, t):
			return nil
		case strings.HasPrefix(t, "{") || strings.HasPrefix(t, llama3Tag):
			s.state, s.section, s.pending = 1, t, ""
			return s.scan(false)
		}
		s.state = 2
		p := s.pending
		s.pending = ""
		return s.content(p)
	}
	if i := strings.Index(s.pending, s.f.trigger); i >= 0 {
		before := strings.TrimRightFunc(s.pending[:i], unicode.IsSpace)
		s.state, s.section, s.pending = 1, s.pending[i:], ""
		if err := s.content(before); err != nil {
			return err
		}
		return s.scan(false)
	}
	// Hold back a partial trigger and the whitespace before it.
	cut := len(s.pending) - prefixOverlap(s.pending, s.f.trigger)
	p := strings.TrimRightFunc(s.pending[:cut], unicode.IsSpace)
	s.pending = s.pending[len(p):]
	if p == "" {
		return nil
	}
	return s.content(p)
}

// flush passes on what is held back, at the end of the text.
func (s *toolSplitter) flush() error {
	if s.state == 1 {
		return s.scan(true)
	}
	p := s.pending
	s.pending = ""
	if p == "" {
		return nil
	}
	return s.content(p)
}

// scan reads the section so far and sends what is new.
func (s *toolSplitter) scan(final bool) error {
	sc := s.f.parse(s.section)
	for _, c := range sc.calls {
		if c.nameDone && !s.names[c.name] {
			sc.bad = true // a JSON answer that looks like a call, or a call of no tool
		}
	}
	if sc.bad || final && len(sc.calls) == 0 {
		if s.calls == 0 {
			// No call after all: it was text.
			s.state = 2
			return s.content(s.section)
		}
		s.state = 2 // the calls so far stand; the rest is dropped
		return nil
	}
	for i, c := range sc.calls {
		if !c.nameDone {
			break
		}
		if i == len(s.sent) {
			// Calls get ids of ours: a model's own (Mistral's) come
			// after the name, too late for the first delta.
			id := newCallID(s.mistralIDs)
			s.sent = append(s.sent, sentCall{id: id})
			s.calls++
			if err := s.call(i, id, c.name, ""); err != nil {
				return err
			}
		}
		if n := s.sent[i].args; len(c.args) > n {
			s.sent[i].args = len(c.args)
			if err := s.call(i, "", "", c.args[n:]); err != nil {
				return err
			}
		}
	}
	if sc.end >= 0 {
		rest := strings.TrimLeftFunc(s.section[sc.end:], unicode.IsSpace)
		s.state, s.section = 2, ""
		return s.content(rest)
	}
	return nil
}

// newCallID returns a call's id: Mistral's templates want 9 letters and
// digits, others take OpenAI's call_ form.
func newCallID(mistral bool) string {
	t := strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, rand.Text())
	if mistral {
		return t[:9]
	}
	return "call_" + t[:24]
}

// The parsers. Each reads a section from its start; an incomplete section
// gives what is known so far.

// parseHermes reads <tool_call>{...}</tool_call> blocks separated by
// whitespace.
func parseHermes(s string) sectionScan {
	const open, close = "<tool_call>", "</tool_call>"
	sc := sectionScan{end: -1}
	i := 0
	for {
		if !strings.HasPrefix(s[i:], open) {
			if strings.HasPrefix(open, s[i:]) {
				return sc // "<tool_c": wait
			}
			sc.end = i
			return sc
		}
		c, n, ok := scanCallObject(s[i+len(open):], "arguments", "parameters")
		if !ok {
			sc.bad = true
			return sc
		}
		sc.calls = append(sc.calls, c)
		if n < 0 {
			return sc
		}
		j := skipSpace(s, i+len(open)+n)
		switch {
		case strings.HasPrefix(s[j:], close):
			i = j + len(close)
		case strings.HasPrefix(close, s[j:]):
			return sc
		default:
			sc.bad = true
			return sc
		}
		k := skipSpace(s, i)
		if k == len(s) {
			return sc // another call may follow
		}
		if !strings.HasPrefix(s[k:], open) && !strings.HasPrefix(open, s[k:]) {
			sc.end = i
			return sc
		}
		i = k
	}
}

const llama3Tag = "<|python_tag|>"

// parseLlama3 reads {"name": ..., "parameters": {...}} objects, separated
// by ";" or whitespace, at the start of the answer.
func parseLlama3(s string) sectionScan {
	sc := sectionScan{end: -1}
	i := skipSpace(s, 0)
	i += len(llama3Tag) * boolInt(strings.HasPrefix(s[i:], llama3Tag))
	for {
		i = skipSpace(s, i)
		if i == len(s) {
			return sc
		}
		c, n, ok := scanCallObject(s[i:], "parameters", "arguments")
		if !ok {
			sc.bad = true
			return sc
		}
		sc.calls = append(sc.calls, c)
		if n < 0 {
			return sc
		}
		i = skipSpace(s, i+n)
		if i < len(s) && s[i] == ';' {
			i++
			continue
		}
		if i < len(s) && s[i] != '{' {
			sc.end = i
			return sc
		}
	}
}

// parseMistral reads [TOOL_CALLS][{...}, ...], and the newer
// [TOOL_CALLS]name[ARGS]{...}.
func parseMistral(s string) sectionScan {
	const open = "[TOOL_CALLS]"
	sc := sectionScan{end: -1}
	i := skipSpace(s, len(open))
	if i == len(s) {
		return sc
	}
	if s[i] != '[' {
		return parseMistralArgs(s)
	}
	i++
	for {
		i = skipSpace(s, i)
		if i == len(s) {
			return sc
		}
		c, n, ok := scanCallObject(s[i:], "arguments", "parameters")
		if !ok {
			sc.bad = true
			return sc
		}
		sc.calls = append(sc.calls, c)
		if n < 0 {
			return sc
		}
		i = skipSpace(s, i+n)
		switch {
		case i == len(s):
			return sc
		case s[i] == ',':
			i++
		case s[i] == ']':
			sc.end = i + 1
			return sc
		default:
			sc.bad = true
			return sc
		}
	}
}

// parseMistralArgs reads [TOOL_CALLS]name[ARGS]{...}, repeated.
func parseMistralArgs(s string) sectionScan {
	const open, args = "[TOOL_CALLS]", "[ARGS]"
	sc := sectionScan{end: -1}
	i := 0
	for {
		if !strings.HasPrefix(s[i:], open) {
			if strings.HasPrefix(open, s[i:]) {
				return sc
			}
			sc.end = i
			return sc
		}
		i += len(open)
		j := strings.Index(s[i:], args)
		if j < 0 {
			if name := s[i : len(s)-prefixOverlap(s[i:], args)]; strings.ContainsAny(name, " \n{}[]\"") {
				sc.bad = true
			}
			return sc
		}
		c := scannedCall{name: s[i : i+j], nameDone: true}
		i += j + len(args)
		end, complete, ok := scanValue(s, i)
		if !ok {
			sc.bad = true
			return sc
		}
		c.args, c.argsDone = s[i:end], complete
		sc.calls = append(sc.calls, c)
		if !complete {
			return sc
		}
		i = skipSpace(s, end)
		if i == len(s) {
			return sc
		}
	}
}

// parseDeepSeek reads DeepSeek's tool tokens:
// <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
// ```json ARGS ```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>.
func parseDeepSeek(s string) sectionScan {
	sc := sectionScan{end: -1}
	i := len(dsCallsBegin)
	for {
		i = skipSpace(s, i)
		rest := s[i:]
		switch {
		case strings.HasPrefix(rest, dsCallsEnd):
			sc.end = i + len(dsCallsEnd)
			return sc
		case strings.HasPrefix(dsCallsEnd, rest) || strings.HasPrefix(dsCallBegin, rest):
			return sc
		case !strings.HasPrefix(rest, dsCallBegin):
			sc.bad = true
			return sc
		}
		i += len(dsCallBegin)
		j := strings.Index(s[i:], dsSep)
		if j < 0 {
			return sc
		}
		i += j + len(dsSep)
		nl := strings.IndexByte(s[i:], '\n')
		if nl < 0 {
			return sc
		}
		c := scannedCall{name: strings.TrimSpace(s[i : i+nl]), nameDone: true}
		i = skipSpace(s, i+nl)
		if rest := s[i:]; len(rest) < len("```json") && strings.HasPrefix("```json", rest) {
			sc.calls = append(sc.calls, c)
			return sc
		}
		i += len("```json") * boolInt(strings.HasPrefix(s[i:], "```json"))
		i = skipSpace(s, i)
		end, complete, ok := scanValue(s, i)
		if !ok {
			sc.bad = true
			return sc
		}
		c.args, c.argsDone = s[i:end], complete
		sc.calls = append(sc.calls, c)
		if !complete {
			return sc
		}
		i = skipSpace(s, end)
		i += len("```") * boolInt(strings.HasPrefix(s[i:], "```"))
		i = skipSpace(s, i)
		switch rest := s[i:]; {
		case strings.HasPrefix(rest, dsCallEnd):
			i += len(dsCallEnd)
		case strings.HasPrefix(dsCallEnd, rest) || strings.HasPrefix("```"+dsCallEnd, rest):
			return sc
		default:
			sc.bad = true
			return sc
		}
	}
}

// scanCallObject reads a call object at the start of s: its "name" and
// the arguments under one of argKeys (and an "id"). It returns the length
// of the object, or -1 while it is incomplete; ok is false when s cannot
// be such an object (its first key is not "name", "type", "id" or an
// argument key, or it is no JSON).
func scanCallObject(s string, argKeys ...string) (c scannedCall, n int, ok bool) {
	i := skipSpace(s, 0)
	if i == len(s) {
		return c, -1, true
	}
	if s[i] != '{' {
		return c, 0, false
	}
	i++
	for first := true; ; first = false {
		i = skipSpace(s, i)
		if i == len(s) {
			return c, -1, true
		}
		if s[i] == '}' {
			return c, i + 1, c.nameDone
		}
		end, complete, ok := scanValue(s, i)
		if !ok || s[i] != '"' {
			return c, 0, false
		}
		if !complete {
			return c, -1, true
		}
		var key string
		json.Unmarshal([]byte(s[i:end]), &key)
		if first && key != "name" && key != "type" && key != "id" && !slices.Contains(argKeys, key) {
			return c, 0, false
		}
		i = skipSpace(s, end)
		if i == len(s) {
			return c, -1, true
		}
		if s[i] != ':' {
			return c, 0, false
		}
		i = skipSpace(s, i+1)
		if i == len(s) {
			return c, -1, true
		}
		end, complete, ok = scanValue(s, i)
		if !ok {
			return c, 0, false
		}
		raw := s[i:end]
		switch {
		case key == "name" && complete:
			if json.Unmarshal([]byte(raw), &c.name) != nil {
				return c, 0, false
			}
			c.nameDone = true
		case slices.Contains(argKeys, key):
			if s[i] == '"' {
				// Arguments as a JSON string: sent once whole.
				if complete {
					var a string
					if json.Unmarshal([]byte(raw), &a) != nil {
						return c, 0, false
					}
					c.args, c.argsDone = a, true
				}
			} else {
				c.args, c.argsDone = raw, complete
			}
		}
		if !complete {
			return c, -1, true
		}
		i = skipSpace(s, end)
		if i == len(s) {
			return c, -1, true
		}
		switch s[i] {
		case ',':
			i++
		case '}':
			return c, i + 1, c.nameDone
		default:
			return c, 0, false
		}
	}
}

// scanValue finds the end of the JSON value starting at s[i]: complete is
// false while s ends inside it, ok is false when it is no JSON value.
func scanValue(s string, i int) (end int, complete, ok bool) {
	if i >= len(s) {
		return len(s), false, true
	}
	switch c := s[i]; {
	case c == '{' || c == '[':
		depth, inString, escaped := 0, false, false
		for j := i; j < len(s); j++ {
			b := s[j]
			switch {
			case inString:
				switch {
				case escaped:
					escaped = false
				case b == '\\':
					escaped = true
				case b == '"':
					inString = false
				}
			case b == '"':
				inString = true
			case b == '{' || b == '[':
				depth++
			case b == '}' || b == ']':
				depth--
				if depth == 0 {
					return j + 1, true, json.Valid([]byte(s[i : j+1]))
				}
			}
		}
		return len(s), false, true
	case c == '"':
		escaped := false
		for j := i + 1; j < len(s); j++ {
			switch {
			case escaped:
				escaped = false
			case s[j] == '\\':
				escaped = true
			case s[j] == '"':
				return j + 1, true, true
			}
		}
		return len(s), false, true
	case c == '-' || c >= '0' && c <= '9' || c == 't' || c == 'f' || c == 'n':
		j := i
		for j < len(s) && strings.IndexByte(",}] \t\r\n", s[j]) < 0 {
			j++
		}
		if j == len(s) {
			return j, false, true
		}
		return j, true, json.Valid([]byte(s[i:j]))
	}
	return i, false, false
}

func skipSpace(s string, i int) int {
	for i < len(s) && strings.IndexByte(" \t\r\n", s[i]) >= 0 {
		i++
	}
	return min(i, len(s))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
