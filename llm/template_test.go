package llm

import (
	"errors"
	"testing"

	"github.com/memload/memload/internal/testutil"
)

func TestDetectTemplate(t *testing.T) {
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
		{"{{'<｜User｜>' + c}}{{'<｜Assistant｜>'}}", TemplateDeepSeekR1, false},
	}
	for _, tt := range tests {
		got, err := detectTemplate(tt.src)
		if err != nil || got.name != tt.want || got.think != tt.think {
			t.Errorf("detectTemplate(%.40q) = %+v, %v; want %s think=%v", tt.src, got, err, tt.want, tt.think)
		}
	}
	for _, src := range []string{"", "[INST] {{ content }} [/INST]", "<start_of_turn>user"} {
		if _, err := detectTemplate(src); !errors.Is(err, ErrUnknownTemplate) {
			t.Errorf("detectTemplate(%q) error = %v, want ErrUnknownTemplate", src, err)
		}
	}
}

// TestRender checks each family against the output of the model's own
// Jinja template (from transformers' apply_chat_template), without the BOS
// token that the tokenizer adds.
func TestRender(t *testing.T) {
	conv := []Message{
		{RoleSystem, "Be brief."},
		{RoleUser, "Hi!"},
		{RoleAssistant, "<think>\nGreet back.\n</think>\n\nHello."},
		{RoleUser, " 2+2? "},
	}
	tests := []struct {
		tmpl template
		msgs []Message
		want string
	}{
		{template{name: TemplateChatML}, conv,
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n" +
				"<|im_start|>assistant\n<think>\nGreet back.\n</think>\n\nHello.<|im_end|>\n" +
				"<|im_start|>user\n 2+2? <|im_end|>\n<|im_start|>assistant\n"},
		{template{name: TemplateDeepSeekR1, think: true}, conv,
			"Be brief.<｜User｜>Hi!<｜Assistant｜>\n\nHello.<｜end▁of▁sentence｜><｜User｜> 2+2? <｜Assistant｜><think>\n"},
		{template{name: TemplateDeepSeekR1}, []Message{{RoleUser, "Hi"}},
			"<｜User｜>Hi<｜Assistant｜>"},
		{template{name: TemplateLlama3}, conv,
			"<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n<think>\nGreet back.\n</think>\n\nHello.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
	}
	for _, tt := range tests {
		got, err := tt.tmpl.render(tt.msgs)
		if err != nil || got != tt.want {
			t.Errorf("%s: render =\n%q, %v\nwant\n%q", tt.tmpl.name, got, err, tt.want)
		}
	}
}

func TestRenderRejects(t *testing.T) {
	tmpl := template{name: TemplateChatML}
	if _, err := tmpl.render(nil); err == nil {
		t.Error("no messages: no error")
	}
	if _, err := tmpl.render([]Message{{"tool", "x"}}); err == nil {
		t.Error("role tool: no error")
	}
}
