package llm

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnknownTemplate is matched by the error of [Load] when the model's
// chat template (or [Options.Template]) is not one of the known families.
var ErrUnknownTemplate = errors.New("llm: unknown chat template")

// Template families, the values [Options.Template] accepts by name.
const (
	TemplateChatML     = "chatml"      // Qwen2 and Qwen2.5, and others with <|im_start|>
	TemplateDeepSeekR1 = "deepseek-r1" // DeepSeek-R1 and its Qwen/Llama distillations
	TemplateLlama3     = "llama3"      // Llama 3, 3.1, 3.2, 3.3 Instruct
)

// template renders a conversation into a prompt the way one family's Jinja
// template does. Models ship their template as Jinja source in
// tokenizer.chat_template; rather than run Jinja, this package recognises
// the family by its marker tokens, as llama.cpp's built-in templates do.
type template struct {
	name string
	// think is set for DeepSeek-R1 templates whose generation prompt
	// opens the reasoning block ("<｜Assistant｜><think>\n").
	think bool
}

// detectTemplate returns the family of a template given by name or as
// Jinja source.
func detectTemplate(src string) (template, error) {
	has := func(s string) bool { return strings.Contains(src, s) }
	switch {
	case src == TemplateChatML || has("<|im_start|>"):
		return template{name: TemplateChatML}, nil
	case src == TemplateDeepSeekR1 || has("<｜User｜>") && has("<｜Assistant｜>"):
		return template{name: TemplateDeepSeekR1, think: src == TemplateDeepSeekR1 || has("<｜Assistant｜><think>")}, nil
	case src == TemplateLlama3 || has("<|start_header_id|>") && has("<|end_header_id|>"):
		return template{name: TemplateLlama3}, nil
	case src == "":
		return template{}, fmt.Errorf("%w: the model has no tokenizer.chat_template; set Options.Template to %q, %q or %q",
			ErrUnknownTemplate, TemplateChatML, TemplateDeepSeekR1, TemplateLlama3)
	}
	excerpt := src
	if len(excerpt) > 80 {
		excerpt = excerpt[:80] + "…"
	}
	return template{}, fmt.Errorf("%w: %q is not ChatML, DeepSeek-R1 or Llama 3; set Options.Template to one of %q, %q, %q if the model follows one",
		ErrUnknownTemplate, excerpt, TemplateChatML, TemplateDeepSeekR1, TemplateLlama3)
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
	var b strings.Builder
	switch t.name {
	case TemplateChatML:
		for _, m := range msgs {
			fmt.Fprintf(&b, "<|im_start|>%s\n%s<|im_end|>\n", m.Role, m.Content)
		}
		b.WriteString("<|im_start|>assistant\n")
	case TemplateLlama3:
		for _, m := range msgs {
			fmt.Fprintf(&b, "<|start_header_id|>%s<|end_header_id|>\n\n%s<|eot_id|>", m.Role, strings.TrimSpace(m.Content))
		}
		b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	case TemplateDeepSeekR1:
		// The template puts the last system message first, with no markup,
		// and drops the reasoning from earlier assistant turns.
		for _, m := range msgs {
			if m.Role == RoleSystem {
				b.Reset()
				b.WriteString(m.Content)
			}
		}
		for _, m := range msgs {
			switch m.Role {
			case RoleUser:
				b.WriteString("<｜User｜>" + m.Content)
			case RoleAssistant:
				content := m.Content
				if i := strings.LastIndex(content, "</think>"); i >= 0 {
					content = content[i+len("</think>"):]
				}
				b.WriteString("<｜Assistant｜>" + content + "<｜end▁of▁sentence｜>")
			}
		}
		b.WriteString("<｜Assistant｜>")
		if t.think {
			b.WriteString("<think>\n")
		}
	default:
		return "", ErrUnknownTemplate
	}
	return b.String(), nil
}
