package llm

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/hybridgroup/yzma/pkg/llama"
)

// ErrUnknownTemplate is matched by the error of [Load] when llama.cpp
// cannot render the model's chat template (or [Options.Template]).
var ErrUnknownTemplate = errors.New("llm: unknown chat template")

// Template names that [Model.Template] returns and [Options.Template]
// accepts. Any other name llama.cpp knows works as well.
const (
	TemplateChatML = "chatml" // Qwen2 and Qwen2.5, and others with <|im_start|>
	TemplateLlama3 = "llama3" // Llama 3, 3.1, 3.2, 3.3 Instruct

	// TemplateDeepSeekR1 is DeepSeek-R1 and its Qwen/Llama distillations:
	// llama.cpp's "deepseek3" family, with the generation prompt opening
	// the reasoning block ("<｜Assistant｜><think>\n") as their Jinja
	// template does. Such a model [Model.Thinks].
	TemplateDeepSeekR1 = "deepseek-r1"
)

// template renders conversations with llama.cpp's llama_chat_apply_template,
// which recognises several dozen families, by name or from their Jinja
// source.
type template struct {
	name string // the family's name, as llama_chat_builtin_templates gives it
	src  string // what llama.cpp is given: the name or the model's Jinja source
	// think is set when the generation prompt opens the reasoning block;
	// addThink when llama.cpp leaves that to us (its deepseek3 family).
	think, addThink bool
}

// probe is a conversation whose rendering tells families apart.
var probe = []Message{
	{RoleSystem, "S"}, {RoleUser, "U1"}, {RoleAssistant, "A1"}, {RoleUser, "U2"},
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
func detectTemplate(src string) (template, error) {
	if src == "" {
		return template{}, fmt.Errorf("%w: the model has no tokenizer.chat_template; set Options.Template to a family's name, such as %q, %q or %q",
			ErrUnknownTemplate, TemplateChatML, TemplateDeepSeekR1, TemplateLlama3)
	}
	if src == TemplateDeepSeekR1 {
		return template{name: TemplateDeepSeekR1, src: "deepseek3", think: true, addThink: true}, nil
	}
	got, err := apply(src, probe)
	if err != nil {
		excerpt := src
		if len(excerpt) > 80 {
			excerpt = excerpt[:80] + "…"
		}
		return template{}, fmt.Errorf("%w: llama.cpp cannot render %q; set Options.Template to the name of the family the model follows, such as %q, %q or %q",
			ErrUnknownTemplate, excerpt, TemplateChatML, TemplateDeepSeekR1, TemplateLlama3)
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

// render returns the prompt for msgs followed by the opening of the
// assistant's turn. The beginning-of-sequence token is not included: the
// tokenizer adds it when the model asks for it.
func (t template) render(msgs []Message) (string, error) {
	if len(msgs) == 0 {
		return "", errors.New("llm: no messages")
	}
	for i, m := range msgs {
		switch m.Role {
		case RoleSystem, RoleUser, RoleAssistant:
		default:
			return "", fmt.Errorf("llm: message %d has role %q; want %q, %q or %q", i, m.Role, RoleSystem, RoleUser, RoleAssistant)
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

// apply runs llama_chat_apply_template.
func apply(tmpl string, msgs []Message) (string, error) {
	if strings.IndexByte(tmpl, 0) >= 0 {
		return "", errors.New("template holds a NUL byte")
	}
	chat := make([]llama.ChatMessage, len(msgs))
	size := 64
	for i, m := range msgs {
		if strings.IndexByte(m.Content, 0) >= 0 {
			return "", fmt.Errorf("message %d holds a NUL byte", i)
		}
		chat[i] = llama.NewChatMessage(m.Role, m.Content)
		size += 2*len(m.Content) + 64
	}
	for range 2 {
		buf := make([]byte, size)
		n := llama.ChatApplyTemplate(tmpl, chat, true, buf)
		if n < 0 {
			return "", errors.New("llama.cpp does not know this template")
		}
		if int(n) <= len(buf) {
			return string(buf[:n]), nil
		}
		size = int(n)
	}
	return "", errors.New("llama.cpp's rendering keeps growing")
}
