package openai

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sdkDir holds the request bodies recorded from OpenAI's official SDKs
// (see its README): the chatbot replays them against a real model, this
// package against a fake one.
const sdkDir = "../examples/chatbot/testdata/sdk"

// threes cuts text into pieces of three characters.
func threes(text string) []string {
	var out []string
	r := []rune(text)
	for i := 0; i < len(r); i += 3 {
		out = append(out, string(r[i:min(i+3, len(r))]))
	}
	return out
}

// TestSDKRecordings sends every recorded request to the handler, whose
// model calls get_weather when it has tools and no result yet, and answers
// the schema's JSON under response_format json_schema; the answers must be
// what the SDKs expect, the calls streamed as deltas.
func TestSDKRecordings(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(sdkDir, "requests.json"))
	if err != nil {
		t.Fatal(err)
	}
	var list []struct {
		Name, Method, Path string
		BodyFile           string `json:"body_file"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	m := &fakeModel{template: "chatml", respond: func(msgs []Message, o ChatOptions) []string {
		switch {
		case len(o.Tools) > 0 && msgs[len(msgs)-1].Role != RoleTool:
			return threes("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>")
		case o.Grammar != "":
			return threes(`{"city":"Paris","celsius":21,"sunny":true}`)
		}
		return threes("It is 21 °C in Paris.")
	}}
	var grammars []*fakeGrammars
	url := serve(t, m, func(h *Handler) {
		h.Name = "memload-test"
		h.Grammars = func() GrammarBuilder {
			g := newFakeGrammars().(*fakeGrammars)
			grammars = append(grammars, g)
			return g
		}
	})
	seen := map[string]bool{}
	for _, r := range list {
		t.Run(r.Name, func(t *testing.T) {
			var body []byte
			if r.BodyFile != "" {
				if body, err = os.ReadFile(filepath.Join(sdkDir, r.BodyFile)); err != nil {
					t.Fatal(err)
				}
			}
			req, _ := http.NewRequest(r.Method, url+r.Path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s", resp.Status, out)
			}
			if r.Path != "/v1/chat/completions" {
				return
			}
			var sent struct {
				Stream         bool                  `json:"stream"`
				Tools          []json.RawMessage     `json:"tools"`
				ResponseFormat struct{ Type string } `json:"response_format"`
				Messages       []struct{ Role string }
			}
			json.Unmarshal(body, &sent)
			msgs, o := m.asked()
			wantCall := len(sent.Tools) > 0 && sent.Messages[len(sent.Messages)-1].Role != "tool"
			var calls []string
			var finish string
			if sent.Stream {
				for _, c := range chunks(t, string(out)) {
					if len(c.Choices) == 0 {
						continue
					}
					for _, d := range c.Choices[0].Delta.ToolCalls {
						if *d.Index == len(calls) {
							calls = append(calls, d.Function.Name+" ")
						}
						calls[*d.Index] += d.Function.Arguments
					}
					if c.Choices[0].FinishReason != nil {
						finish = *c.Choices[0].FinishReason
					}
				}
			} else {
				var a chatResponse
				json.Unmarshal(out, &a)
				for _, c := range a.Choices[0].Message.ToolCalls {
					calls = append(calls, c.Function.Name+" "+c.Function.Arguments)
				}
				finish = *a.Choices[0].FinishReason
				if sent.ResponseFormat.Type == "json_schema" {
					seen["json_schema"] = true
					var v struct {
						City    string
						Celsius float64
						Sunny   bool
					}
					if err := json.Unmarshal([]byte(*a.Choices[0].Message.Content), &v); err != nil || v.City != "Paris" || !strings.Contains(o.Grammar, "j-object") {
						t.Errorf("structured answer %s, grammar %q", out, o.Grammar)
					}
					if s := grammars[len(grammars)-1].schemas; len(s) != 1 || !strings.Contains(s[0], `"celsius":{"type":"number"}`) {
						t.Errorf("schema given to the converter: %q", s)
					}
				}
			}
			if wantCall {
				seen["call"] = true
				if strings.Join(calls, ",") != `get_weather {"city": "Paris"}` || finish != "tool_calls" {
					t.Errorf("calls %q, finish %q: %s", calls, finish, out)
				}
			} else if len(calls) > 0 || finish != "stop" {
				t.Errorf("calls %q, finish %q: %s", calls, finish, out)
			}
			for i, msg := range msgs {
				if msg.Role == RoleTool {
					seen["result"] = true
					if prev := msgs[i-1]; msg.ToolCallID != "call_rec1" || msg.Name != "get_weather" || len(prev.ToolCalls) != 1 ||
						prev.ToolCalls[0].ID != "call_rec1" || prev.ToolCalls[0].Arguments != `{"city":"Paris"}` {
						t.Errorf("the call and its result fed back: %+v", msgs)
					}
				}
			}
		})
	}
	if len(seen) != 3 {
		t.Errorf("the recordings hold %v: want a call, its result fed back, and json_schema", seen)
	}
}
