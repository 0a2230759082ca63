package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/memload/memload/internal/testutil"
)

// weatherTool and the conversations below exercise what chat templates do
// with system prompts, tools, tool calls and their results.
var weatherTool = Tool{
	Name:        "get_weather",
	Description: "Get the current weather in a city.",
	Parameters:  json.RawMessage(`{"type": "object", "properties": {"city": {"type": "string", "description": "The city"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}`),
}

var jinjaConversations = []struct {
	name  string
	msgs  []Message
	tools []Tool
}{
	{"plain", []Message{
		{Role: RoleSystem, Content: "Be brief."},
		{Role: RoleUser, Content: "Hi!"},
		{Role: RoleAssistant, Content: "Hello."},
		{Role: RoleUser, Content: " 2+2? "},
	}, nil},
	{"no system", []Message{{Role: RoleUser, Content: "Hi!"}}, nil},
	{"reasoning", []Message{
		{Role: RoleUser, Content: "Hi!"},
		{Role: RoleAssistant, Content: "<think>\nGreet back.\n</think>\n\nHello."},
		{Role: RoleUser, Content: "Again."},
	}, nil},
	{"control bytes", []Message{
		{Role: RoleUser, Content: "Echo this."},
		{Role: RoleAssistant, Content: "a\x00b\x01c\x1b[0m é 😀"},
		{Role: RoleUser, Content: "Again."},
	}, nil},
	{"tools offered", []Message{
		{Role: RoleSystem, Content: "You help with the weather."},
		{Role: RoleUser, Content: "Weather in Paris?"},
	}, []Tool{weatherTool}},
	{"tool call and result", []Message{
		{Role: RoleSystem, Content: "You help with the weather."},
		{Role: RoleUser, Content: "Weather in Paris?"},
		{Role: RoleAssistant, ToolCalls: []ToolCall{{ID: "call12345", Name: "get_weather", Arguments: `{"city": "Paris", "unit": "celsius"}`}}},
		{Role: RoleTool, ToolCallID: "call12345", Name: "get_weather", Content: `{"temperature": 21, "sky": "clear"}`},
	}, []Tool{weatherTool}},
	{"tool call, no tools listed", []Message{
		{Role: RoleSystem, Content: "You help with the weather."},
		{Role: RoleUser, Content: "Weather in Paris?"},
		{Role: RoleAssistant, ToolCalls: []ToolCall{{ID: "call12345", Name: "get_weather", Arguments: `{"city": "Paris", "unit": "celsius"}`}}},
		{Role: RoleTool, ToolCallID: "call12345", Name: "get_weather", Content: `{"temperature": 21, "sky": "clear"}`},
		{Role: RoleAssistant, Content: "<think>\nEasy.\n</think>\n\nIt is 21 C and clear."},
		{Role: RoleUser, Content: "Thanks."},
	}, nil},
	{"markup in a tool", []Message{{Role: RoleUser, Content: "<b>Bold & bright</b> é"}},
		[]Tool{{Name: "fmt", Description: "Wraps text in <b> & </b>; 'quotes' \"too\" é 😀 \u2028.", Parameters: json.RawMessage(`{"type": "object", "properties": {"n": {"type": "number", "minimum": 1.5, "maximum": 10}}}`)}}},
	{"tool call without system", []Message{
		{Role: RoleUser, Content: "Weather in Paris?"},
		{Role: RoleAssistant, ToolCalls: []ToolCall{{ID: "call12345", Name: "get_weather", Arguments: `{"city": "Paris"}`}}},
		{Role: RoleTool, ToolCallID: "call12345", Content: "21 C"},
		{Role: RoleAssistant, Content: "It is 21 C."},
		{Role: RoleUser, Content: "And Rome?"},
	}, []Tool{weatherTool}},
	{"parallel calls", []Message{
		{Role: RoleUser, Content: "Weather in Paris and Rome?"},
		{Role: RoleAssistant, Content: "Checking.", ToolCalls: []ToolCall{
			{ID: "call00001", Name: "get_weather", Arguments: `{"city": "Paris"}`},
			{ID: "call00002", Name: "get_weather", Arguments: `{"city": "Rome"}`},
		}},
		{Role: RoleTool, ToolCallID: "call00001", Content: "21 C"},
		{Role: RoleTool, ToolCallID: "call00002", Content: "25 C"},
	}, []Tool{weatherTool}},
}

// publishedTemplates are the templates of llm/testdata/templates (see its
// README), with the family llama.cpp names and whether they render tools.
var publishedTemplates = []struct {
	file   string
	family string
	tools  bool
}{
	{"Qwen-Qwen2.5-7B-Instruct.jinja", TemplateChatML, true},
	{"Qwen-Qwen3-8B.jinja", TemplateChatML, true},
	{"meta-llama-Llama-3.1-8B-Instruct.jinja", TemplateLlama3, true},
	{"meta-llama-Llama-3.2-3B-Instruct.jinja", TemplateLlama3, true},
	{"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", TemplateDeepSeekR1, true}, // tools in the system prompt
	{"mistralai-Mistral-Nemo-Instruct-2407.jinja", "", true},
	{"mistralai-Ministral-3-14B-Instruct-2512.jinja", "", true},
	{"google-gemma-3-it.jinja", "gemma", false},
	{"microsoft-phi-4.jinja", "phi4", false},
}

// TestJinjaMatchesPython renders every published template over every
// conversation and compares the result byte for byte with Python's jinja2
// in transformers' environment (testdata/render_jinja2.py): where jinja2
// renders, the output is the same; where the template raises, the Go
// engine fails too.
func TestJinjaMatchesPython(t *testing.T) {
	SystemInfo() // llama.cpp names the families
	if err := exec.Command("python3", "-c", "import jinja2").Run(); err != nil {
		t.Fatalf("python3 with jinja2 is the reference: install it (apt-get install -y python3-jinja2): %v", err)
	}
	now := time.Date(2026, 12, 6, 4, 5, 6, 0, time.UTC)
	type pyCase struct {
		Template string `json:"template"`
		Context  omap   `json:"context"`
	}
	type goCase struct {
		name string
		out  string
		err  error
	}
	var py []pyCase
	var gos []goCase
	for _, pt := range publishedTemplates {
		src, err := os.ReadFile(filepath.Join("testdata", "templates", pt.file))
		if err != nil {
			t.Fatal(err)
		}
		tmpl, err := detectTemplate(string(src), nil)
		if err != nil {
			t.Fatalf("%s: %v", pt.file, err)
		}
		if tmpl.jinja == nil {
			t.Errorf("%s: not rendered by the Jinja engine", pt.file)
			continue
		}
		if pt.family != "" && tmpl.name != pt.family || tmpl.rendersTools() != pt.tools {
			t.Errorf("%s: family %q, renders tools %v; want %q, %v", pt.file, tmpl.name, tmpl.rendersTools(), pt.family, pt.tools)
		}
		t.Logf("%s: family %s, tools %v (in the system prompt %v), tool calls %v (object arguments %v), tool results %v",
			pt.file, tmpl.name, tmpl.jinja.tools, tmpl.jinja.polyfill(), tmpl.jinja.toolCalls, tmpl.jinja.objectArgs, tmpl.jinja.toolResults)
		j := tmpl.jinja
		j.now = func() time.Time { return now }
		for _, c := range jinjaConversations {
			ctx, err := j.context(c.msgs, c.tools)
			if err != nil {
				t.Fatal(err)
			}
			out, err := tmpl.render(c.msgs, c.tools)
			if errors.Is(err, ErrBadOption) || errors.Is(err, ErrBadMessage) && !errors.As(err, new(*templateError)) && !strings.Contains(err.Error(), "refuses") {
				// Parts the template does not render are refused before
				// it runs: nothing to compare.
				t.Logf("%s/%s: refused: %v", pt.file, c.name, err)
				continue
			}
			gos = append(gos, goCase{pt.file + "/" + c.name, out, err})
			py = append(py, pyCase{string(src), ctx})
		}
	}
	in, err := json.Marshal(map[string]any{"now": now.Format("2006-01-02T15:04:05"), "cases": py})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("python3", filepath.Join("testdata", "render_jinja2.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("render_jinja2.py: %v\n%s", err, stderr.String())
	}
	var want []struct {
		Out   *string `json:"out"`
		Error string  `json:"error"`
	}
	if err := json.Unmarshal(raw, &want); err != nil || len(want) != len(gos) {
		t.Fatalf("render_jinja2.py gave %d results (%v), want %d", len(want), err, len(gos))
	}
	rendered := 0
	for i, g := range gos {
		w := want[i]
		switch {
		case w.Out == nil && g.err == nil:
			t.Errorf("%s: jinja2 fails (%s), the Go engine renders %q", g.name, w.Error, g.out)
		case w.Out != nil && g.err != nil:
			t.Errorf("%s: the Go engine fails (%v), jinja2 renders %q", g.name, g.err, *w.Out)
		case w.Out != nil && g.out != *w.Out:
			t.Errorf("%s: the Go engine renders\n%q\njinja2\n%q", g.name, g.out, *w.Out)
		case w.Out != nil:
			rendered++
		default:
			var te *templateError
			t.Logf("%s: both fail: jinja2 %s; Go %v (raised by the template: %v)", g.name, w.Error, g.err, errors.As(g.err, &te))
		}
	}
	t.Logf("%d of %d renderings identical, the rest fail in both", rendered, len(gos))
	if rendered < len(gos)*2/3 {
		t.Errorf("only %d of %d cases render: the comparison covers too little", rendered, len(gos))
	}
}

// TestJinjaFallback checks that a template the Jinja engine cannot render
// falls back to llama.cpp's family, saying so in the log.
func TestJinjaFallback(t *testing.T) {
	SystemInfo()
	var log strings.Builder
	logger := slog.New(slog.NewTextHandler(&log, nil))
	// Valid for llama.cpp's detection (it holds <|im_start|>), but not
	// Jinja: the tag is never closed.
	src := "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
	tmpl, err := detectTemplate(src, logger)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.jinja != nil || tmpl.name != TemplateChatML {
		t.Errorf("got jinja=%v family %q, want llama.cpp's chatml", tmpl.jinja != nil, tmpl.name)
	}
	if !strings.Contains(log.String(), "does not render in the Jinja engine") {
		t.Errorf("no log line about the fallback: %q", log.String())
	}
	got, err := tmpl.render([]Message{{Role: RoleUser, Content: "Hi"}}, nil)
	if err != nil || got != "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" {
		t.Errorf("render = %q, %v", got, err)
	}
	// A template that raises refuses the conversation with ErrBadMessage,
	// naming the problem.
	src2, err := os.ReadFile(filepath.Join("testdata", "templates", "google-gemma-3-it.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	gemma, err := detectTemplate(string(src2), logger)
	if err != nil {
		t.Fatal(err)
	}
	_, err = gemma.render([]Message{{Role: RoleUser, Content: "a"}, {Role: RoleUser, Content: "b"}}, nil)
	if !errors.Is(err, ErrBadMessage) || !strings.Contains(err.Error(), "Conversation roles must alternate") {
		t.Errorf("gemma with two user messages: %v, want ErrBadMessage naming the alternation", err)
	}
	if _, err := gemma.render([]Message{{Role: RoleUser, Content: "a"}}, []Tool{weatherTool}); !errors.Is(err, ErrBadOption) {
		t.Errorf("gemma with tools: %v, want ErrBadOption", err)
	}
}

// TestToolsInSystemPrompt checks that a template rendering calls but not
// the tools variable (DeepSeek-R1's) gets the tools in the system prompt,
// with an example call in its own syntax.
func TestToolsInSystemPrompt(t *testing.T) {
	SystemInfo()
	src, err := os.ReadFile(filepath.Join("testdata", "templates", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := detectTemplate(string(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.setTokens("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", true)
	example := "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>tool_name\n```json\n{\"arg1\": \"some_value\"}\n```<｜tool▁call▁end｜>"
	for _, msgs := range [][]Message{
		{{Role: RoleSystem, Content: "Be brief."}, {Role: RoleUser, Content: "Weather?"}},
		{{Role: RoleUser, Content: "Weather?"}},
	} {
		got, err := tmpl.render(msgs, []Tool{weatherTool})
		if err != nil {
			t.Fatal(err)
		}
		want := "You can call any of the following tools to satisfy the user's requests: [\n  {\n    \"type\": \"function\",\n    \"function\": {\n      \"name\": \"get_weather\","
		if !strings.HasPrefix(got, strings.Repeat("Be brief.\n\n", len(msgs)-1)+want) || !strings.Contains(got, "Example tool call syntax:\n\n"+example+"\n\n<｜User｜>Weather?<｜Assistant｜><think>\n") {
			t.Errorf("rendering:\n%s", got)
		}
	}
}

// TestHostileTemplates feeds templates that break the engine in ways a
// model file might: no panic escapes, the load either fails with
// ErrUnknownTemplate or falls back to llama.cpp's family.
func TestHostileTemplates(t *testing.T) {
	SystemInfo()
	for _, src := range []string{
		"<|im_start|>{{ messages[99]['content'] }}",
		"<|im_start|>{{ 1 / 0 }}{{ messages[0].content }}",
		"<|im_start|>{% for x in 5 %}{% endfor %}{{ messages[0].content }}",
		"<|im_start|>{{ messages[0].content.nope() }}",
		"<|im_start|>{% macro f() %}{{ f() }}{% endmacro %}{{ messages[0].content }}",
		"{{ messages | tojson(indent='x') }}{{ messages[0]['content'] }}",
		"{% if %}",
		"{{ raise_exception() }}",
	} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%q: panic %v", src, r)
				}
			}()
			tmpl, err := detectTemplate(src, nil)
			if err != nil {
				if !errors.Is(err, ErrUnknownTemplate) {
					t.Errorf("%q: %v, want ErrUnknownTemplate", src, err)
				}
				return
			}
			_, err = tmpl.render([]Message{{Role: RoleUser, Content: "Hi"}}, nil)
			t.Logf("%q: family %s, jinja %v; render: %v", src, tmpl.name, tmpl.jinja != nil, err)
		}()
	}
}

// BenchmarkRender compares a Chat call's rendering by the Jinja engine
// with llama.cpp's built-in family, over the tool conversation.
func BenchmarkRender(b *testing.B) {
	SystemInfo()
	conv := jinjaConversations[0].msgs
	for _, name := range []string{"jinja", "builtin"} {
		src := testutil.PublishedTemplate(b, testutil.Qwen25File)
		if name == "builtin" {
			src = TemplateChatML
		}
		tmpl, err := detectTemplate(src, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := tmpl.render(conv, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
