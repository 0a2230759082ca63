package llm

import (
	"errors"
	"testing"

	"github.com/memload/memload/internal/testutil"
)

func TestDetectTemplate(t *testing.T) {
	SystemInfo() // loads llama.cpp
	tests := []struct {
		src   string
		want  string
		think bool
	}{
		{testutil.ChatMLTemplate, TemplateChatML, false},
		{testutil.DeepSeekR1Template, TemplateDeepSeekR1, true},
		{testutil.Llama3Template, TemplateLlama3, false},
		{TemplateChatML, TemplateChatML, false},
		{TemplateDeepSeekR1, TemplateDeepSeekR1, true},
		{TemplateLlama3, TemplateLlama3, false},
		// The first DeepSeek-R1 releases did not open the think block.
		{"{{'<｜User｜>' + c}}{{'<｜Assistant｜>' + c + '<｜end▁of▁sentence｜>'}}", "deepseek3", false},
		// Families llama.cpp knows beyond the three this package once
		// recognised by hand.
		{"[INST] {{ content }} [/INST]", "llama2", false},
		{"<start_of_turn>user", "gemma", false},
		{"mistral-v7", "mistral-v7", false},
		{"bailing-think", "bailing-think", true},
	}
	for _, tt := range tests {
		got, err := detectTemplate(tt.src)
		if err != nil || got.name != tt.want || got.think != tt.think {
			t.Errorf("detectTemplate(%.40q) = %+v, %v; want %s think=%v", tt.src, got, err, tt.want, tt.think)
		}
	}
	for _, src := range []string{"", "{{ unknown }}", "Hello, {{ name }}", "chatml-but-not"} {
		if _, err := detectTemplate(src); !errors.Is(err, ErrUnknownTemplate) {
			t.Errorf("detectTemplate(%q) error = %v, want ErrUnknownTemplate", src, err)
		}
	}
}

// TestRender checks llama.cpp's rendering of each family against the
// output of the model's own Jinja template (from transformers'
// apply_chat_template), without the BOS token that the tokenizer adds.
// llama.cpp's deepseek3 differs in one place: it ends the system prompt
// with "\n\n".
func TestRender(t *testing.T) {
	SystemInfo()
	conv := []Message{
		{RoleSystem, "Be brief."},
		{RoleUser, "Hi!"},
		{RoleAssistant, "<think>\nGreet back.\n</think>\n\nHello."},
		{RoleUser, " 2+2? "},
	}
	tests := []struct {
		tmpl string
		msgs []Message
		want string
	}{
		{TemplateChatML, conv,
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n" +
				"<|im_start|>assistant\n<think>\nGreet back.\n</think>\n\nHello.<|im_end|>\n" +
				"<|im_start|>user\n 2+2? <|im_end|>\n<|im_start|>assistant\n"},
		{testutil.DeepSeekR1Template, conv,
			"Be brief.\n\n<｜User｜>Hi!<｜Assistant｜>\n\nHello.<｜end▁of▁sentence｜><｜User｜> 2+2? <｜Assistant｜><think>\n"},
		{TemplateDeepSeekR1, []Message{{RoleUser, "Hi"}},
			"<｜User｜>Hi<｜Assistant｜><think>\n"},
		{TemplateLlama3, conv,
			"<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n<think>\nGreet back.\n</think>\n\nHello.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
	}
	for _, tt := range tests {
		tmpl, err := detectTemplate(tt.tmpl)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tmpl.render(tt.msgs)
		if err != nil || got != tt.want {
			t.Errorf("%s: render =\n%q, %v\nwant\n%q", tmpl.name, got, err, tt.want)
		}
	}
}

func TestRenderRejects(t *testing.T) {
	SystemInfo()
	tmpl, err := detectTemplate(TemplateChatML)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmpl.render(nil); err == nil {
		t.Error("no messages: no error")
	}
	if _, err := tmpl.render([]Message{{"tool", "x"}}); err == nil {
		t.Error("role tool: no error")
	}
	if _, err := tmpl.render([]Message{{RoleUser, "a\x00b"}}); err == nil {
		t.Error("NUL byte: no error")
	}
}
