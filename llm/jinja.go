package llm

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
)

// jinjaTemplate renders the model's own chat template (its GGUF's
// tokenizer.chat_template) as Hugging Face's transformers does: Jinja with
// trim_blocks and lstrip_blocks, the variables messages, tools,
// add_generation_prompt, bos_token and eos_token, and the functions
// raise_exception and strftime_now. github.com/ardanlabs/jinja is the
// engine; the tests compare its output with Python's jinja2.
type jinjaTemplate struct {
	tmpl     *jinja.Template
	bos, eos string // the model's token texts, set once the vocabulary is loaded
	stripBOS bool   // the tokenizer adds BOS: cut the template's

	// What the template renders, found by probing it (probeJinja).
	tools       bool // the tools variable
	toolCalls   bool // an assistant's tool_calls
	toolResults bool // messages of RoleTool
	// objectArgs passes a call's arguments as an object (as Llama 3.1 and
	// Qwen2.5 expect), not as JSON text (as DeepSeek-R1's template does).
	objectArgs bool
	// emptyContent gives such a message "" as content, not none (as
	// Mistral's templates need; DeepSeek-R1's needs none). The Go engine
	// takes none where jinja2 fails, so "" is tried first.
	emptyContent bool
	// callExample is how the template writes a call, for templates that
	// render calls but not the tools variable (DeepSeek-R1's): tools are
	// then described in the system prompt, with this example, as
	// llama.cpp's minja does (see toolsPrompt).
	callExample string
	// sortKeys sorts the keys of the tools' objects: the engine's
	// tojson(indent=...) sorts them, Python's keeps their order; sorted
	// input renders the same in both.
	sortKeys bool

	now func() time.Time // strftime_now's clock
}

// templateError is an error the template raised itself (raise_exception).
type templateError struct{ msg string }

func (e *templateError) Error() string { return e.msg }

// compileJinja compiles src. The engine is not ours: a panic in it is an
// error, as for any input from a model file.
func compileJinja(src string) (j *jinjaTemplate, err error) {
	defer func() {
		if r := recover(); r != nil {
			j, err = nil, fmt.Errorf("the Jinja engine failed: %v", r)
		}
	}()
	t, err := jinja.Compile(src)
	if err != nil {
		return nil, err
	}
	return &jinjaTemplate{tmpl: t, bos: "<s>", eos: "</s>", sortKeys: strings.Contains(src, "indent="), now: time.Now}, nil
}

// Probe contents: a rendering that holds one of them renders that part.
const (
	probeUser   = "memload probe: user"
	probeUser2  = "memload probe: second user"
	probeAnswer = "memload probe: answer"
	probeTool   = "memload_probe_tool"
	probeArgs   = `{"x": "memload probe: argument"}`
	probeResult = "memload probe: result"
)

// probeJinja checks that j renders a plain conversation, and finds which
// tool parts it renders.
func probeJinja(j *jinjaTemplate) error {
	plain := []Message{{Role: RoleUser, Content: probeUser}, {Role: RoleAssistant, Content: probeAnswer}, {Role: RoleUser, Content: probeUser2}}
	s, err := j.render(plain, nil)
	if err != nil {
		return err
	}
	for _, want := range []string{probeUser, probeAnswer, probeUser2} {
		if !strings.Contains(s, want) {
			return fmt.Errorf("the rendering of a conversation leaves out %q", want)
		}
	}
	tools := []Tool{{Name: probeTool, Description: "probe", Parameters: json.RawMessage(`{"type":"object","properties":{"x":{"type":"string"}}}`)}}
	if s, err := j.render(plain, tools); err == nil && strings.Contains(s, probeTool) {
		j.tools = true
	}
	call := []Message{
		{Role: RoleUser, Content: probeUser},
		{Role: RoleAssistant, ToolCalls: []ToolCall{{ID: "call00001", Name: probeTool, Arguments: probeArgs}}},
		{Role: RoleTool, ToolCallID: "call00001", Name: probeTool, Content: probeResult},
	}
	// The arguments appear as they are either as text or as an object
	// through tojson; as text first, for templates that concatenate them.
	for i := range 4 {
		j.objectArgs, j.emptyContent = i&1 != 0, i&2 == 0
		s, err := j.render(call, tools)
		if err == nil && strings.Contains(s, probeArgs) {
			j.toolCalls = true
			j.toolResults = strings.Contains(s, probeResult)
			break
		}
	}
	j.findCallExample()
	if !j.toolCalls {
		j.objectArgs, j.emptyContent = true, false
		if s, err := j.render(append(plain[:1:1], Message{Role: RoleTool, Content: probeResult}), nil); err == nil {
			j.toolResults = strings.Contains(s, probeResult)
		}
	}
	return nil
}

// polyfill reports whether tools are described in the system prompt.
func (j *jinjaTemplate) polyfill() bool {
	return !j.tools && j.toolCalls && j.toolResults && j.callExample != ""
}

// findCallExample sets callExample: the text a call adds to a rendering,
// without the opening of the assistant's turn and the end of sequence.
func (j *jinjaTemplate) findCallExample() {
	j.callExample = ""
	if j.tools || !j.toolCalls {
		return
	}
	user := []Message{{Role: RoleUser, Content: probeUser}}
	call := append(user, Message{Role: RoleAssistant, ToolCalls: []ToolCall{{ID: "call00001", Name: "tool_name", Arguments: `{"arg1": "some_value"}`}}})
	full, err1 := j.renderGen(call, nil, false)
	base, err2 := j.renderGen(user, nil, false)
	gen, err3 := j.renderGen(user, nil, true)
	if err1 != nil || err2 != nil || err3 != nil || !strings.HasPrefix(full, base) || !strings.HasPrefix(gen, base) {
		return
	}
	ex, open := full[len(base):], gen[len(base):]
	// The opening of the turn both share, to the end of its last tag or
	// line (not into a token that starts alike).
	n := 0
	for n < len(ex) && n < len(open) && ex[n] == open[n] {
		n++
	}
	n = strings.LastIndexAny(ex[:n], ">\n") + 1
	ex = strings.TrimSuffix(ex[n:], j.eos)
	j.callExample = strings.TrimSpace(ex)
}

// toolsPrompt describes tools for the system prompt, in the words of
// llama.cpp's minja polyfill.
func (j *jinjaTemplate) toolsPrompt(tools any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(tools); err != nil {
		return "", err
	}
	return "You can call any of the following tools to satisfy the user's requests: " + strings.TrimSuffix(b.String(), "\n") +
		"\n\nExample tool call syntax:\n\n" + j.callExample + "\n\n", nil
}

// render renders msgs and tools, with the generation prompt.
func (j *jinjaTemplate) render(msgs []Message, tools []Tool) (string, error) {
	return j.renderGen(msgs, tools, true)
}

func (j *jinjaTemplate) renderGen(msgs []Message, tools []Tool, gen bool) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("the Jinja engine failed: %v", r)
		}
	}()
	vars, err := j.context(msgs, tools)
	if err != nil {
		return "", err
	}
	for i := range vars {
		if vars[i].k == "add_generation_prompt" {
			vars[i].v = gen
		}
	}
	// The engine's tojson escapes what Python's does not (U+2028 and
	// U+2029; <, > and & with an indent, as Llama 3's templates use for
	// tools): such characters go in as private-use stand-ins, which it
	// writes as they are, and come back out of the rendering.
	conv := valueConverter{}
	if !hasStandIn(vars) {
		conv.plain = standIns.lineSep
		if j.sortKeys {
			conv.tools = standIns.all
		}
	}
	data := make(map[string]jinja.Value, len(vars)+2)
	for _, kv := range vars {
		r := conv.plain
		if kv.k == "tools" {
			r = cmp.Or(conv.tools, conv.plain)
		}
		data[kv.k] = toValue(kv.v, r)
	}
	data["raise_exception"] = jinja.NewCallable("raise_exception", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		msg := "raise_exception"
		if len(args) > 0 && args[0].IsString() {
			msg = args[0].AsString()
		}
		return jinja.Undefined(), &templateError{msg}
	})
	data["strftime_now"] = jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		if len(args) == 0 || !args[0].IsString() {
			return jinja.Undefined(), errors.New("strftime_now: want a format string")
		}
		return jinja.NewString(strftime(j.now(), args[0].AsString())), nil
	})
	out, err = j.tmpl.RenderValues(data)
	if conv.plain != nil && err == nil {
		out = standIns.back.Replace(out)
	}
	return out, err
}

// standIns replace the characters the engine's tojson escapes and
// Python's does not with characters of Unicode's last private-use plane.
var standIns = struct {
	lineSep, all, back *strings.Replacer
	runes              string
}{
	lineSep: strings.NewReplacer("\u2028", "\U0010FFF0", "\u2029", "\U0010FFF1"),
	all:     strings.NewReplacer("\u2028", "\U0010FFF0", "\u2029", "\U0010FFF1", "<", "\U0010FFF2", ">", "\U0010FFF3", "&", "\U0010FFF4"),
	back:    strings.NewReplacer("\U0010FFF0", "\u2028", "\U0010FFF1", "\u2029", "\U0010FFF2", "<", "\U0010FFF3", ">", "\U0010FFF4", "&"),
	runes:   "\U0010FFF0\U0010FFF1\U0010FFF2\U0010FFF3\U0010FFF4",
}

type valueConverter struct{ plain, tools *strings.Replacer }

// hasStandIn reports whether a string in v holds a stand-in already:
// then none is used.
func hasStandIn(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsAny(v, standIns.runes)
	case []any:
		return slices.ContainsFunc(v, hasStandIn)
	case omap:
		return slices.ContainsFunc(v, func(e kv) bool { return hasStandIn(e.k) || hasStandIn(e.v) })
	}
	return false
}

// context returns the template's variables, in the form both this engine
// and Python's jinja2 (in the tests, through JSON) read.
func (j *jinjaTemplate) context(msgs []Message, tools []Tool) (omap, error) {
	ms := make([]any, len(msgs))
	for i, m := range msgs {
		o := omap{{"role", m.Role}}
		if m.Content == "" && len(m.ToolCalls) > 0 && !j.emptyContent {
			o = append(o, kv{"content", nil}) // as OpenAI's clients send it
		} else {
			o = append(o, kv{"content", m.Content})
		}
		if len(m.ToolCalls) > 0 {
			calls := make([]any, len(m.ToolCalls))
			for k, c := range m.ToolCalls {
				var args any = c.Arguments
				if j.objectArgs {
					if v, err := parseJSON([]byte(c.Arguments), false); err == nil {
						args = v
					}
				}
				calls[k] = omap{{"id", c.ID}, {"type", "function"}, {"function", omap{{"name", c.Name}, {"arguments", args}}}}
			}
			o = append(o, kv{"tool_calls", calls})
		}
		if m.ToolCallID != "" {
			o = append(o, kv{"tool_call_id", m.ToolCallID})
		}
		if m.Name != "" {
			o = append(o, kv{"name", m.Name})
		}
		ms[i] = o
	}
	var ts any // none, as transformers passes when there are no tools
	if len(tools) > 0 {
		list := make([]any, len(tools))
		for i, t := range tools {
			f := omap{{"name", t.Name}}
			if t.Description != "" {
				f = append(f, kv{"description", t.Description})
			}
			if len(t.Parameters) > 0 {
				p, err := parseJSON(t.Parameters, j.sortKeys)
				if err != nil {
					return nil, fmt.Errorf("%w: Tools[%d].Parameters: %v", ErrBadOption, i, err)
				}
				f = append(f, kv{"parameters", p})
			}
			tool := omap{{"type", "function"}, {"function", f}}
			if j.sortKeys {
				slices.SortFunc(f, func(a, b kv) int { return strings.Compare(a.k, b.k) })
				tool = omap{{"function", f}, {"type", "function"}}
			}
			list[i] = tool
		}
		ts = list
		if j.polyfill() {
			text, err := j.toolsPrompt(list)
			if err != nil {
				return nil, err
			}
			if len(ms) > 0 && msgs[0].Role == RoleSystem {
				sys := slices.Clone(ms[0].(omap))
				sys[1].v = msgs[0].Content + "\n\n" + text
				ms[0] = sys
			} else {
				ms = append([]any{omap{{"role", RoleSystem}, {"content", text}}}, ms...)
			}
			ts = nil
		}
	}
	return omap{
		{"messages", ms},
		{"tools", ts},
		{"add_generation_prompt", true},
		{"bos_token", j.bos},
		{"eos_token", j.eos},
	}, nil
}

// omap is a JSON object that keeps its keys' order, as Python's dicts do.
type omap []kv

type kv struct {
	k string
	v any
}

// MarshalJSON writes o in order (for the tests' Python reference).
func (o omap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.k)
		var v bytes.Buffer
		enc := json.NewEncoder(&v)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(e.v); err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(bytes.TrimSuffix(v.Bytes(), []byte("\n")))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// parseJSON decodes data into omap, []any, string, json.Number, bool and
// nil, keeping the order of object keys unless sortKeys.
func parseJSON(data []byte, sortKeys bool) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := parseValue(d, sortKeys)
	if err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("more than one JSON value")
	}
	return v, nil
}

func parseValue(d *json.Decoder, sortKeys bool) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		o := omap{}
		for d.More() {
			k, err := d.Token()
			if err != nil {
				return nil, err
			}
			v, err := parseValue(d, sortKeys)
			if err != nil {
				return nil, err
			}
			key := k.(string)
			if i := slices.IndexFunc(o, func(e kv) bool { return e.k == key }); i >= 0 {
				o[i].v = v // the last wins, as in Python
			} else {
				o = append(o, kv{key, v})
			}
		}
		if _, err := d.Token(); err != nil {
			return nil, err
		}
		if sortKeys {
			slices.SortFunc(o, func(a, b kv) int { return strings.Compare(a.k, b.k) })
		}
		return o, nil
	case json.Delim('['):
		l := []any{}
		for d.More() {
			v, err := parseValue(d, sortKeys)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		if _, err := d.Token(); err != nil {
			return nil, err
		}
		return l, nil
	}
	return tok, nil
}

// toValue converts what context and parseJSON build into the engine's
// values, with r (if not nil) replacing characters in strings.
func toValue(v any, r *strings.Replacer) jinja.Value {
	switch v := v.(type) {
	case nil:
		return jinja.None()
	case bool:
		return jinja.NewBool(v)
	case string:
		if r != nil {
			v = r.Replace(v)
		}
		return jinja.NewString(v)
	case json.Number:
		if n, err := v.Int64(); err == nil && !strings.ContainsAny(string(v), ".eE") {
			return jinja.NewInt(n)
		}
		f, _ := v.Float64()
		return jinja.NewFloat(f)
	case []any:
		items := make([]jinja.Value, len(v))
		for i, e := range v {
			items[i] = toValue(e, r)
		}
		return jinja.NewList(items)
	case omap:
		d := jinja.NewDict()
		for _, e := range v {
			k := e.k
			if r != nil {
				k = r.Replace(k)
			}
			d.AsDict().Set(k, toValue(e.v, r))
		}
		return d
	}
	return jinja.Undefined()
}

// strftime formats t with the C strftime directives chat templates use
// (Llama 3.x: "%d %b %Y"; others "%Y-%m-%d"); an unknown directive is
// kept as it is.
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		switch format[i] {
		case 'Y':
			fmt.Fprintf(&b, "%04d", t.Year())
		case 'y':
			fmt.Fprintf(&b, "%02d", t.Year()%100)
		case 'm':
			fmt.Fprintf(&b, "%02d", int(t.Month()))
		case 'd':
			fmt.Fprintf(&b, "%02d", t.Day())
		case 'e':
			fmt.Fprintf(&b, "%2d", t.Day())
		case 'H':
			fmt.Fprintf(&b, "%02d", t.Hour())
		case 'I':
			fmt.Fprintf(&b, "%02d", (t.Hour()+11)%12+1)
		case 'M':
			fmt.Fprintf(&b, "%02d", t.Minute())
		case 'S':
			fmt.Fprintf(&b, "%02d", t.Second())
		case 'p':
			b.WriteString(t.Format("PM"))
		case 'b':
			b.WriteString(t.Format("Jan"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}
