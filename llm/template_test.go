package llm

import (
	"errors"
	"strings"
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
		got, err := detectTemplate(tt.src, nil)
		if err != nil || got.name != tt.want || got.think != tt.think {
			t.Errorf("detectTemplate(%.40q) = %+v, %v; want %s think=%v", tt.src, got, err, tt.want, tt.think)
		}
	}
	for _, src := range []string{"", "{{ unknown }}", "Hello, {{ name }}", "chatml-but-not"} {
		if _, err := detectTemplate(src, nil); !errors.Is(err, ErrUnknownTemplate) {
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
		{Role: RoleSystem, Content: "Be brief."},
		{Role: RoleUser, Content: "Hi!"},
		{Role: RoleAssistant, Content: "<think>\nGreet back.\n</think>\n\nHello."},
		{Role: RoleUser, Content: " 2+2? "},
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
		// The model's own template, through the Jinja engine (bos_token
		// is cut once the model is loaded; see setTokens).
		{testutil.DeepSeekR1Template, conv,
			"<s>Be brief.<｜User｜>Hi!<｜Assistant｜>\n\nHello.<｜end▁of▁sentence｜><｜User｜> 2+2? <｜Assistant｜><think>\n"},
		{TemplateDeepSeekR1, []Message{{Role: RoleUser, Content: "Hi"}},
			"<｜User｜>Hi<｜Assistant｜><think>\n"},
		{TemplateLlama3, conv,
			"<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n<think>\nGreet back.\n</think>\n\nHello.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
	}
	for _, tt := range tests {
		tmpl, err := detectTemplate(tt.tmpl, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tmpl.render(tt.msgs, nil)
		if err != nil || got != tt.want {
			t.Errorf("%s: render =\n%q, %v\nwant\n%q", tmpl.name, got, err, tt.want)
		}
	}
}

func TestRenderRejects(t *testing.T) {
	SystemInfo()
	tmpl, err := detectTemplate(TemplateChatML, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmpl.render(nil, nil); err == nil {
		t.Error("no messages: no error")
	}
	if _, err := tmpl.render([]Message{{Role: "robot", Content: "x"}}, nil); !errors.Is(err, ErrBadMessage) {
		t.Errorf("role robot: error %v, want ErrBadMessage", err)
	}
	if _, err := tmpl.render([]Message{{Role: RoleTool, Content: "x"}}, nil); !errors.Is(err, ErrBadMessage) {
		t.Errorf("role tool with a built-in family: error %v, want ErrBadMessage", err)
	}
	if _, err := tmpl.render([]Message{{Role: RoleUser, Content: "x"}}, []Tool{{Name: "f"}}); !errors.Is(err, ErrBadOption) {
		t.Errorf("tools with a built-in family: error %v, want ErrBadOption", err)
	}
	// What a model generates comes back: NUL and other control bytes
	// through llama.cpp's C strings too.
	got, err := tmpl.render([]Message{{Role: RoleUser, Content: "a\x00b\x01c"}}, nil)
	if err != nil || !strings.Contains(got, "user\na\x00b\x01c<|im_end|>") {
		t.Errorf("NUL byte: %q, %v", got, err)
	}
}
