package openai

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

type wantCall struct{ name, args string }

// toolOutputs are model outputs in each family's format, with the content
// and calls they hold.
var toolOutputs = []struct {
	name, family, text, content string
	calls                       []wantCall
}{
	{"hermes", "chatml", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "",
		[]wantCall{{"get_weather", `{"city": "Paris"}`}}},
	{"hermes, text and two calls", "qwen3", "Let me check.\n<tool_call>\n{\"name\":\"a\",\"arguments\":{}}\n</tool_call>\n<tool_call>\n{\"name\":\"b\",\"arguments\":{\"x\":[1,\"}\\\"\"]}}\n</tool_call>", "Let me check.",
		[]wantCall{{"a", `{}`}, {"b", `{"x":[1,"}\""]}`}}},
	{"hermes, arguments as a string", "chatml", `<tool_call>{"name":"a","arguments":"{\"x\":1}"}</tool_call>`, "", []wantCall{{"a", `{"x":1}`}}},
	{"hermes, text after", "chatml", `<tool_call>{"name":"a","arguments":{}}</tool_call> done`, "done", []wantCall{{"a", `{}`}}},
	{"hermes, no call", "chatml", "I use <tool> tags, <tool_c too", "I use <tool> tags, <tool_c too", nil},
	{"hermes, a call of no tool is text", "chatml", `<tool_call>{"name":"nope","arguments":{}}</tool_call>`, `<tool_call>{"name":"nope","arguments":{}}</tool_call>`, nil},
	{"hermes, broken JSON is text", "chatml", `<tool_call>{"name" "a"}</tool_call>`, `<tool_call>{"name" "a"}</tool_call>`, nil},
	{"llama3", "llama3", ` {"name": "get_weather", "parameters": {"city": "Paris"}}`, "", []wantCall{{"get_weather", `{"city": "Paris"}`}}},
	{"llama3, python tag", "llama3.1", `<|python_tag|>{"name": "a", "parameters": {"q": "x"}}`, "", []wantCall{{"a", `{"q": "x"}`}}},
	{"llama3, two calls", "llama3", `{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"n": 2}}`, "", []wantCall{{"a", `{}`}, {"b", `{"n": 2}`}}},
	{"llama3, a JSON answer", "llama3", `{"answer": 42}`, `{"answer": 42}`, nil},
	{"llama3, text", "llama3", `Hello {"name": "a", "parameters": {}}`, `Hello {"name": "a", "parameters": {}}`, nil},
	{"mistral", "mistral-v7", `[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}, "id": "abcdefghi"}, {"name": "b", "arguments": {}}]`, "",
		[]wantCall{{"a", `{"x": 1}`}, {"b", `{}`}}},
	{"mistral, name and [ARGS]", "mistral-v7-tekken", `[TOOL_CALLS]a[ARGS]{"x": 1}`, "", []wantCall{{"a", `{"x": 1}`}}},
	{"deepseek", "deepseek-r1", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "",
		[]wantCall{{"get_weather", `{"city": "Paris"}`}}},
	{"deepseek, two calls", "deepseek3", "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n{}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>b\n```json\n{\"n\": [2]}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "Sure.",
		[]wantCall{{"a", `{}`}, {"b", `{"n": [2]}`}}},
}

var toolNames = map[string]bool{"get_weather": true, "a": true, "b": true}

// TestToolSplitter: every way of cutting a model's output into pieces
// (whole characters, as llm passes them) gives the same content and calls,
// and each call comes first with its id and name, then its arguments.
func TestToolSplitter(t *testing.T) {
	for _, tc := range toolOutputs {
		t.Run(tc.name, func(t *testing.T) {
			f := formatOf(tc.family)
			if f == nil {
				t.Fatalf("no format for %s", tc.family)
			}
			runes := strings.Split(tc.text, "")
			cuts := [][]string{{tc.text}, runes}
			for i := 1; i < len(runes); i++ {
				cuts = append(cuts, []string{strings.Join(runes[:i], ""), strings.Join(runes[i:], "")})
			}
			for _, pieces := range cuts {
				var content strings.Builder
				var calls []wantCall
				var ids []string
				s := &toolSplitter{f: f, names: toolNames, mistralIDs: f.name == "mistral",
					content: func(c string) error { content.WriteString(c); return nil },
					call: func(i int, id, name, args string) error {
						switch {
						case id != "" && i == len(calls) && name != "" && args == "":
							calls = append(calls, wantCall{name: name})
							ids = append(ids, id)
						case id == "" && name == "" && i == len(calls)-1 && args != "":
							calls[i].args += args
						default:
							t.Fatalf("pieces %q: call(%d, %q, %q, %q) out of order", pieces, i, id, name, args)
						}
						return nil
					}}
				for _, p := range pieces {
					if err := s.write(p); err != nil {
						t.Fatal(err)
					}
				}
				if err := s.flush(); err != nil {
					t.Fatal(err)
				}
				if strings.TrimSpace(content.String()) != tc.content || fmt.Sprint(calls) != fmt.Sprint(tc.calls) {
					t.Fatalf("pieces %q: content %q calls %v, want %q %v", pieces, content.String(), calls, tc.content, tc.calls)
				}
				for _, id := range ids {
					if f.name == "mistral" && len(id) != 9 || f.name != "mistral" && !strings.HasPrefix(id, "call_") {
						t.Errorf("%s id %q", f.name, id)
					}
				}
			}
		})
	}
}

const weatherTools = `"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},
	{"type":"function","function":{"name":"a","parameters":{"type":"object","properties":{}}}},
	{"type":"function","function":{"name":"b"}}]`

// TestToolCallsStreamed: calls reach the client as OpenAI streams them
// (id, type and name first, then the arguments in pieces; finish_reason
// "tool_calls"), which OpenAI's Go SDK accumulates into the same calls as
// the non-streamed answer.
func TestToolCallsStreamed(t *testing.T) {
	for _, tc := range toolOutputs {
		if len(tc.calls) == 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			// Pieces of three characters.
			var pieces []string
			r := []rune(tc.text)
			for i := 0; i < len(r); i += 3 {
				pieces = append(pieces, string(r[i:min(i+3, len(r))]))
			}
			url := serve(t, &fakeModel{template: tc.family, pieces: pieces})
			body := `{"messages":[{"role":"user","content":"Weather in Paris?"}],` + weatherTools

			code, out := ask(t, url, body+`,"stream":true}`)
			if code != 200 {
				t.Fatalf("%d %s", code, out)
			}
			var got []wantCall
			var content strings.Builder
			var finish string
			for _, c := range chunks(t, out) {
				if len(c.Choices) == 0 {
					continue
				}
				d := c.Choices[0].Delta
				content.WriteString(d.Content)
				if c.Choices[0].FinishReason != nil {
					finish = *c.Choices[0].FinishReason
				}
				if len(d.ToolCalls) > 1 {
					t.Fatalf("a delta with %d calls", len(d.ToolCalls))
				}
				for _, tcd := range d.ToolCalls {
					switch {
					case tcd.Index == nil:
						t.Fatalf("a tool call delta without an index: %+v", tcd)
					case *tcd.Index == len(got):
						if tcd.ID == "" || tcd.Type != "function" || tcd.Function.Name == "" || tcd.Function.Arguments != "" {
							t.Fatalf("first delta of call %d: %+v", *tcd.Index, tcd)
						}
						got = append(got, wantCall{name: tcd.Function.Name})
					case *tcd.Index == len(got)-1 && tcd.ID == "" && tcd.Function.Name == "":
						got[*tcd.Index].args += tcd.Function.Arguments
					default:
						t.Fatalf("delta %+v after %v", tcd, got)
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.calls) || content.String() != tc.content || finish != "tool_calls" {
				t.Errorf("streamed calls %v content %q finish %q, want %v %q", got, content.String(), finish, tc.calls, tc.content)
			}

			code, out = ask(t, url, body+`}`)
			var a chatResponse
			if err := json.Unmarshal([]byte(out), &a); code != 200 || err != nil {
				t.Fatalf("%d %s", code, out)
			}
			msg := a.Choices[0].Message
			got = nil
			for _, c := range msg.ToolCalls {
				if c.Type != "function" || c.ID == "" || c.Index != nil {
					t.Errorf("call %+v", c)
				}
				got = append(got, wantCall{c.Function.Name, c.Function.Arguments})
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.calls) || *a.Choices[0].FinishReason != "tool_calls" ||
				(tc.content == "") != (msg.Content == nil) || !strings.Contains(out, `"content":null`) == (tc.content == "") {
				t.Errorf("answer %s", out)
			}

			// OpenAI's Go SDK gathers the stream into the same calls.
			client := oai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey("unused"))
			var tools []oai.ChatCompletionToolUnionParam
			for _, name := range []string{"get_weather", "a", "b"} {
				tools = append(tools, oai.ChatCompletionFunctionTool(oai.FunctionDefinitionParam{Name: name}))
			}
			stream := client.Chat.Completions.NewStreaming(context.Background(), oai.ChatCompletionNewParams{
				Model: "fake", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Weather?")}, Tools: tools})
			var acc oai.ChatCompletionAccumulator
			finished := 0
			for stream.Next() {
				acc.AddChunk(stream.Current())
				if _, ok := acc.JustFinishedToolCall(); ok {
					finished++
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			got = nil
			for _, c := range acc.Choices[0].Message.ToolCalls {
				got = append(got, wantCall{c.Function.Name, c.Function.Arguments})
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.calls) || acc.Choices[0].FinishReason != "tool_calls" || finished != len(tc.calls) {
				t.Errorf("SDK accumulated %v (%d finished), finish %q", got, finished, acc.Choices[0].FinishReason)
			}
		})
	}
}

// TestToolChoice: the grammar of the calls applies from the first token
// for "required" and a named function, lazily from the family's trigger
// for "auto", not at all for "none".
func TestToolChoice(t *testing.T) {
	m := &fakeModel{template: "chatml", pieces: []string{"<tool_call>", `{"name":"a","arguments":{}}`, "</tool_call>"}}
	url := serve(t, m)
	askTools := func(choice string) (int, string, ChatOptions) {
		t.Helper()
		code, out := ask(t, url, `{"messages":[{"role":"user","content":"Hi"}],`+weatherTools+choice+`}`)
		_, o := m.asked()
		return code, out, o
	}
	code, out, o := askTools(``)
	if code != 200 || len(o.Tools) != 3 || o.Tools[2].Name != "b" || string(o.Tools[2].Parameters) != `{"type":"object","properties":{}}` ||
		fmt.Sprint(o.GrammarTriggers) != "[<tool_call>]" || !strings.HasPrefix(o.Grammar, "root ::= tool-calls\n") {
		t.Fatalf("auto: %d %s %+v", code, out, o)
	}
	if !strings.Contains(o.Grammar, `tool-calls ::= call-block ("\n" call-block)*`) ||
		!strings.Contains(o.Grammar, `call-get-weather ::= "{\"name\": " "\"get_weather\"" ", \"arguments\": " j-object "}"`) {
		t.Errorf("auto grammar:\n%s", o.Grammar)
	}

	_, _, o = askTools(`,"tool_choice":"required"`)
	if len(o.GrammarTriggers) != 0 || !strings.HasPrefix(o.Grammar, "root ::= tool-calls\n") {
		t.Errorf("required: %+v", o)
	}
	_, _, o = askTools(`,"tool_choice":{"type":"function","function":{"name":"a"}},"parallel_tool_calls":false`)
	if len(o.GrammarTriggers) != 0 || !strings.Contains(o.Grammar, "call ::= call-a\n") || strings.Contains(o.Grammar, "call-b") ||
		!strings.Contains(o.Grammar, `tool-calls ::= "<tool_call>\n" call "\n</tool_call>"`) {
		t.Errorf("named, not parallel:\n%s", o.Grammar)
	}
	code, out, o = askTools(`,"tool_choice":"none"`)
	if code != 200 || o.Grammar != "" || !strings.Contains(out, `"content":"\u003ctool_call\u003e{\"name\":\"a\"`) || strings.Contains(out, "tool_calls") {
		t.Errorf("none: %s %+v", out, o)
	}

	// Llama 3's calls are the whole answer: its trigger is the answer's start.
	l3 := &fakeModel{template: "llama3", pieces: []string{`{"name": "a", "parameters": {}}`}}
	code, out = ask(t, serve(t, l3), `{"messages":[{"role":"user","content":"Hi"}],`+weatherTools+`}`)
	if _, o := l3.asked(); code != 200 || fmt.Sprint(o.GrammarTriggers) != `[^\s*\{]` {
		t.Errorf("llama3: %s %+v", out, o.GrammarTriggers)
	}
	// Mistral's templates: v7 writes name[ARGS], earlier ones a JSON list.
	for family, want := range map[string]string{
		"mistral-v7":        `call-a ::= "[TOOL_CALLS]a[ARGS]" j-object`,
		"mistral-v3-tekken": `tool-calls ::= "[TOOL_CALLS][" call (", " call)* "]"`,
	} {
		mm := &fakeModel{template: family}
		ask(t, serve(t, mm), `{"messages":[{"role":"user","content":"Hi"}],`+weatherTools+`}`)
		if _, o := mm.asked(); !strings.Contains(o.Grammar, want) || fmt.Sprint(o.GrammarTriggers) != `[\[TOOL_CALLS\]]` {
			t.Errorf("%s: triggers %q, grammar\n%s", family, o.GrammarTriggers, o.Grammar)
		}
	}
	// A thinking model reasons before a required call.
	ds := &fakeModel{template: "deepseek-r1", thinks: true, pieces: []string{"hm</think>"}}
	ask(t, serve(t, ds), `{"messages":[{"role":"user","content":"Hi"}],`+weatherTools+`,"tool_choice":"required"}`)
	if _, o := ds.asked(); !strings.HasPrefix(o.Grammar, "root ::= reasoned-calls\n") || !strings.Contains(o.Grammar, `"</think>"`) {
		t.Errorf("thinking, required:\n%s", o.Grammar)
	}

	for _, tc := range []struct{ template, body, param, want string }{
		{"gemma", ``, "tools", `template ("gemma") has no tool-call format`},
		{"chatml", `,"tool_choice":{"type":"function","function":{"name":"zz"}}`, "tool_choice", `"zz", which is not among the tools`},
		{"chatml", `,"tool_choice":"sometimes"`, "tool_choice", "use \"none\", \"auto\", \"required\""},
		{"chatml", `,"tools":[{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"a"}}]`, "tools[1].function.name", "each tool needs a name of its own"},
	} {
		body := `{"messages":[{"role":"user","content":"Hi"}],` + weatherTools + tc.body + `}`
		if strings.HasPrefix(tc.body, `,"tools"`) {
			body = `{"messages":[{"role":"user","content":"Hi"}]` + tc.body + `}`
		}
		code, out := ask(t, serve(t, &fakeModel{template: tc.template}), body)
		if e := apiErr(t, out); code != 400 || e.Param != tc.param || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%s %s: %d %s, want 400 naming %s", tc.template, tc.body, code, out, tc.param)
		}
	}
	code, out = ask(t, url, `{"messages":[{"role":"user","content":"Hi"}],"tool_choice":"required"}`)
	if e := apiErr(t, out); code != 400 || e.Param != "tool_choice" {
		t.Errorf("required without tools: %d %s", code, out)
	}
}

// TestToolMessages: an assistant's calls and the tools' results reach the
// model as messages, each result with its call's id and function name.
func TestToolMessages(t *testing.T) {
	m := &fakeModel{template: "chatml", pieces: []string{"It is sunny."}}
	url := serve(t, m)
	code, out := ask(t, url, `{"messages":[{"role":"user","content":"Weather in Paris?"},
		{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
		                                                 {"id":"call_2","type":"function","function":{"name":"a","arguments":""}}]},
		{"role":"tool","tool_call_id":"call_1","content":"sunny"},
		{"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"ok"}]}],`+weatherTools+`}`)
	if code != 200 || !strings.Contains(out, `"finish_reason":"stop"`) {
		t.Fatalf("%d %s", code, out)
	}
	msgs, _ := m.asked()
	want := `[{user Weather in Paris? []  } {assistant  [{call_1 get_weather {"city":"Paris"}} {call_2 a {}}]  } {tool sunny [] call_1 get_weather} {tool ok [] call_2 a}]`
	if fmt.Sprint(msgs) != want {
		t.Errorf("messages\n%v\nwant\n%s", msgs, want)
	}
	for _, tc := range []struct{ msgs, want string }{
		{`{"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"a","arguments":"{"}}]},{"role":"user","content":"a"}`, "arguments is not JSON"},
		{`{"role":"user","content":"a","tool_calls":[{"id":"1","type":"function","function":{"name":"a","arguments":"{}"}}]}`, "only an assistant's message has tool calls"},
	} {
		code, out := ask(t, url, `{"messages":[`+tc.msgs+`]}`)
		if code != 400 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %d %s", tc.msgs, code, out)
		}
	}
}

// TestToolCallsAfterReasoning: a thinking model's reasoning goes to
// reasoning_content, and the calls after it are parsed, even when the
// reasoning mentions the call syntax.
func TestToolCallsAfterReasoning(t *testing.T) {
	text := "I should call <｜tool▁calls▁begin｜> get_weather.</think>\n\n" + dsCallsBegin + dsCallBegin +
		"function" + dsSep + "get_weather\n```json\n{\"city\": \"Paris\"}\n```" + dsCallEnd + dsCallsEnd
	m := &fakeModel{template: "deepseek-r1", thinks: true, pieces: threes(text)}
	code, out := ask(t, serve(t, m), `{"stream":true,"messages":[{"role":"user","content":"Weather?"}],`+weatherTools+`}`)
	var reasoning, content, args strings.Builder
	var names []string
	finish := ""
	for _, c := range chunks(t, out) {
		if len(c.Choices) == 0 {
			continue
		}
		d := c.Choices[0].Delta
		reasoning.WriteString(d.ReasoningContent)
		content.WriteString(d.Content)
		for _, tc := range d.ToolCalls {
			if tc.Function.Name != "" {
				names = append(names, tc.Function.Name)
			}
			args.WriteString(tc.Function.Arguments)
		}
		if f := c.Choices[0].FinishReason; f != nil {
			finish = *f
		}
	}
	if code != 200 || reasoning.String() != "I should call <｜tool▁calls▁begin｜> get_weather." || content.Len() != 0 ||
		fmt.Sprint(names) != "[get_weather]" || args.String() != `{"city": "Paris"}` || finish != "tool_calls" {
		t.Errorf("reasoning %q content %q calls %v(%s) finish %q", reasoning.String(), content.String(), names, args.String(), finish)
	}
}
