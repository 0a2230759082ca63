package llm

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/hybridgroup/yzma/pkg/llama"
)

// ErrUnknownTemplate is matched by the error of [Load] when neither the
// Jinja engine nor llama.cpp can render the model's chat template (or
// [Options.Template]), and by that of [Model.Chat] in the rare case that
// the Jinja engine fails on a conversation and no built-in family can
// take over.
var ErrUnknownTemplate = errors.New("llm: unknown chat template")

// Template names that [Model.Template] returns and [Options.Template]
// accepts. Any other name llama.cpp knows works as well.
//
// [Model.Template] names the family the model's template follows, as
// llama.cpp's llama_chat_builtin_templates names it, whether the Jinja
// engine or llama.cpp renders it. For the published templates tested here:
// chatml (Qwen2, Qwen2.5, Qwen3; tool calls in <tool_call> tags),
// llama3 (Llama 3.1, 3.2; calls as JSON objects), deepseek-r1
// (DeepSeek-R1 distillations; calls between its tool tokens),
// mistral-v3-tekken (Mistral Nemo; [TOOL_CALLS] and a JSON list),
// mistral-v7 (Ministral 3; [TOOL_CALLS]name[ARGS]{…}), gemma (Gemma 3)
// and phi4 (Phi-4); [TemplateJinja] when llama.cpp knows no family for a
// template the engine renders.
const (
	TemplateChatML = "chatml" // Qwen2 and Qwen2.5, and others with <|im_start|>
	TemplateLlama3 = "llama3" // Llama 3, 3.1, 3.2, 3.3 Instruct

	// TemplateDeepSeekR1 is DeepSeek-R1 and its Qwen/Llama distillations:
	// llama.cpp's "deepseek3" family, with the generation prompt opening
	// the reasoning block ("<｜Assistant｜><think>\n") as their Jinja
	// template does. Such a model [Model.Thinks].
	TemplateDeepSeekR1 = "deepseek-r1"

	// TemplateJinja is what [Model.Template] returns for a model whose own
	// Jinja template renders but follows none of llama.cpp's families.
	TemplateJinja = "jinja"
)

// template renders conversations: with the model's own Jinja template
// (jinja.go) when it renders, else with llama.cpp's
// llama_chat_apply_template, which knows several dozen families by name or
// from their Jinja source.
type template struct {
	name string // the family's name (Model.Template)
	src  string // what llama.cpp is given: a family's name or the Jinja source; "" if it knows none
	// think is set when the generation prompt opens the reasoning block;
	// addThink when llama.cpp leaves that to us (its deepseek3 family).
	think, addThink bool

	jinja  *jinjaTemplate // nil: llama.cpp renders
	logger *slog.Logger
}

// probe is a conversation whose rendering tells families apart.
var probe = []Message{
	{Role: RoleSystem, Content: "S"}, {Role: RoleUser, Content: "U1"}, {Role: RoleAssistant, Content: "A1"}, {Role: RoleUser, Content: "U2"},
}

// builtinRenderings renders probe with each of llama.cpp's built-in
// templates, to name the family of a Jinja source.
var builtinRenderings = sync.OnceValue(func() map[string]string {
	out := map[string]string{}
	for _, name := range llama.ChatBuiltinTemplates() {
		if s, err := apply(name, probe); err == nil {
			out[name] = s
		}
	}
	return out
})

// detectTemplate returns the template given by name or as Jinja source.
// Jinja source is rendered by the Jinja engine when it renders a probe
// conversation; else by llama.cpp's family for it, with a warning.
func detectTemplate(src string, logger *slog.Logger) (template, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if src == "" {
		return template{}, fmt.Errorf("%w: the model has no tokenizer.chat_template; set Options.Template to a family's name, such as %q, %q or %q",
			ErrUnknownTemplate, TemplateChatML, TemplateDeepSeekR1, TemplateLlama3)
	}
	builtin, berr := detectBuiltin(src)
	builtin.logger = logger
	if berr == nil && builtin.name == src {
		return builtin, nil // a family's name, not Jinja
	}
	j, jerr := compileJinja(src)
	if jerr == nil {
		jerr = probeJinja(j)
	}
	if jerr != nil {
		if berr != nil {
			return template{}, fmt.Errorf("%w: %v; and the Jinja engine cannot render it: %v", ErrUnknownTemplate, berr, jerr)
		}
		logger.Warn("llm: the model's chat template does not render in the Jinja engine; llama.cpp's built-in family renders it instead, without tools",
			"family", builtin.name, "err", jerr)
		return builtin, nil
	}
	t := template{name: TemplateJinja, jinja: j, logger: logger}
	if berr == nil {
		t.name, t.src = builtin.name, builtin.src
	}
	if s, err := j.render(probe[1:2], nil); err == nil {
		t.think = strings.HasSuffix(strings.TrimSpace(s), "<think>")
	}
	if t.name == "deepseek3" && t.think {
		t.name = TemplateDeepSeekR1
	}
	return t, nil
}

// detectBuiltin returns llama.cpp's family for src.
func detectBuiltin(src string) (template, error) {
	if src == TemplateDeepSeekR1 {
		return template{name: TemplateDeepSeekR1, src: "deepseek3", think: true, addThink: true}, nil
	}
	got, err := apply(src, probe)
	if err != nil {
		excerpt := src
		if len(excerpt) > 80 {
			excerpt = excerpt[:80] + "…"
		}
		return template{}, fmt.Errorf("llama.cpp knows no family for %q; set Options.Template to the name of the family the model follows, such as %q, %q or %q",
			excerpt, TemplateChatML, TemplateDeepSeekR1, TemplateLlama3)
	}
	t := template{name: src, src: src}
	if r := builtinRenderings(); r[src] == "" {
		// Jinja source: name it after the built-in family that renders
		// the same, preferring the shortest (most general) name.
		names := make([]string, 0, len(r))
		for name, s := range r {
			if s == got {
				names = append(names, name)
			}
		}
		slices.SortFunc(names, func(a, b string) int { return cmp.Or(len(a)-len(b), strings.Compare(a, b)) })
		t.name = "unnamed"
		if len(names) > 0 {
			t.name = names[0]
		}
	}
	t.think = strings.HasSuffix(strings.TrimSpace(got), "<think>")
	if t.name == "deepseek3" && strings.Contains(src, "<｜Assistant｜><think>") {
		t.name, t.think, t.addThink = TemplateDeepSeekR1, true, true
	}
	return t, nil
}

// setTokens gives the Jinja template the model's bos_token and eos_token,
// and says whether the tokenizer adds the BOS token itself.
func (t *template) setTokens(bos, eos string, addBOS bool) {
	if t.jinja != nil {
		t.jinja.bos, t.jinja.eos, t.jinja.stripBOS = bos, eos, addBOS && bos != ""
		t.jinja.findCallExample()
	}
}

// rendersTools reports whether tools and tool messages are rendered.
func (t template) rendersTools() bool {
	return t.jinja != nil && (t.jinja.tools || t.jinja.polyfill()) && t.jinja.toolCalls && t.jinja.toolResults
}

// render returns the prompt for msgs followed by the opening of the
// assistant's turn. The beginning-of-sequence token is not included: the
// tokenizer adds it when the model asks for it (so, as llama.cpp's server
// does, a BOS that the Jinja template writes first is cut).
func (t template) render(msgs []Message, tools []Tool) (string, error) {
	if err := checkMessages(msgs); err != nil {
		return "", err
	}
	if err := checkTools(tools); err != nil {
		return "", err
	}
	if j := t.jinja; j != nil {
		if len(tools) > 0 && !j.tools && !j.polyfill() {
			return "", fmt.Errorf("%w: Tools: the model's chat template (%s) does not render tools", ErrBadOption, t.name)
		}
		for i, m := range msgs {
			if len(m.ToolCalls) > 0 && !j.toolCalls {
				return "", fmt.Errorf("%w: message %d has ToolCalls, which the model's chat template (%s) does not render", ErrBadMessage, i, t.name)
			}
			if m.Role == RoleTool && !j.toolResults {
				return "", fmt.Errorf("%w: message %d has role %q, which the model's chat template (%s) does not render", ErrBadMessage, i, m.Role, t.name)
			}
		}
		s, err := j.render(msgs, tools)
		if err == nil {
			if j.stripBOS {
				s = strings.TrimPrefix(s, j.bos)
			}
			return s, nil
		}
		if te := (*templateError)(nil); errors.As(err, &te) {
			return "", fmt.Errorf("%w: the model's chat template refuses the conversation: %s", ErrBadMessage, te.msg)
		}
		if t.src == "" || len(tools) > 0 || hasToolParts(msgs) {
			return "", fmt.Errorf("%w: %s: the Jinja engine failed on these messages: %v", ErrUnknownTemplate, t.name, err)
		}
		t.logger.Warn("llm: the model's chat template does not render these messages in the Jinja engine; llama.cpp's built-in family renders them instead",
			"family", t.name, "err", err)
	}
	if len(tools) > 0 {
		return "", fmt.Errorf("%w: Tools: llama.cpp's built-in %s template does not render tools", ErrBadOption, t.name)
	}
	for i, m := range msgs {
		if len(m.ToolCalls) > 0 || m.Role == RoleTool {
			return "", fmt.Errorf("%w: message %d is a tool call or result, which llama.cpp's built-in %s template does not render", ErrBadMessage, i, t.name)
		}
	}
	if t.think {
		// As the model's own template does: earlier answers without their
		// reasoning.
		msgs = slices.Clone(msgs)
		for i, m := range msgs {
			if j := strings.LastIndex(m.Content, "</think>"); m.Role == RoleAssistant && j >= 0 {
				msgs[i].Content = m.Content[j+len("</think>"):]
			}
		}
	}
	s, err := apply(t.src, msgs)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrUnknownTemplate, t.name, err)
	}
	if t.addThink {
		s += "<think>\n"
	}
	return s, nil
}

func hasToolParts(msgs []Message) bool {
	return slices.ContainsFunc(msgs, func(m Message) bool { return len(m.ToolCalls) > 0 || m.Role == RoleTool })
}

// apply runs llama_chat_apply_template. Its strings are C strings: a NUL
// byte in a message stands in as a string found in no message, and is put
// back in the rendering.
func apply(tmpl string, msgs []Message) (string, error) {
	if strings.IndexByte(tmpl, 0) >= 0 {
		return "", errors.New("template holds a NUL byte")
	}
	nul := ""
	if slices.ContainsFunc(msgs, func(m Message) bool { return strings.IndexByte(m.Content, 0) >= 0 }) {
		nul = "\uFDD0"
		for slices.ContainsFunc(msgs, func(m Message) bool { return strings.Contains(m.Content, nul) }) || strings.Contains(tmpl, nul) {
			nul += "\uFDD1"
		}
	}
	chat := make([]llama.ChatMessage, len(msgs))
	size := 64
	for i, m := range msgs {
		content := m.Content
		if nul != "" {
			content = strings.ReplaceAll(content, "\x00", nul)
		}
		chat[i] = llama.NewChatMessage(m.Role, content)
		size += 2*len(content) + 64
	}
	for range 2 {
		buf := make([]byte, size)
		n := llama.ChatApplyTemplate(tmpl, chat, true, buf)
		if n < 0 {
			return "", errors.New("llama.cpp does not know this template")
		}
		if int(n) <= len(buf) {
			s := string(buf[:n])
			if nul != "" {
				s = strings.ReplaceAll(s, nul, "\x00")
			}
			return s, nil
		}
		size = int(n)
	}
	return "", errors.New("llama.cpp's rendering keeps growing")
}

// RendersTools reports whether the model's own chat template renders
// [ChatOptions.Tools], assistants' [Message.ToolCalls] and [RoleTool]
// messages. A template that renders calls and results but not the tools
// (DeepSeek-R1's) gets them described in the system prompt, with an
// example call in its syntax, as llama.cpp does. Without it, Chat refuses
// them (ErrBadOption, ErrBadMessage).
func (m *Model) RendersTools() bool { return m.tmpl.rendersTools() }
