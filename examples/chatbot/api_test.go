package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestSDKRecordings sends the chatbot every request recorded from the
// official Go and Node SDKs (testdata/sdk, see its README), the multi-turn
// patterns that feed an answer back included, and checks each answer. The
// tool and structured-output flows go to a chatbot whose model's own
// template renders tools (toolServer).
func TestSDKRecordings(t *testing.T) {
	ts := newTestServer(t, testConfig(t, map[string]string{"MODEL_NAME": "memload-test"}))
	tools := toolServer(t)
	unfinished := 0
	b, err := os.ReadFile("testdata/sdk/requests.json")
	if err != nil {
		t.Fatal(err)
	}
	var list []struct {
		Name, SDK, Method, Path string
		ContentType             string `json:"content_type"`
		BodyFile                string `json:"body_file"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	sdks := map[string]int{}
	for _, r := range list {
		sdks[strings.Fields(r.SDK)[0]]++
		t.Run(r.Name, func(t *testing.T) {
			var body []byte
			if r.BodyFile != "" {
				if body, err = os.ReadFile(filepath.Join("testdata/sdk", r.BodyFile)); err != nil {
					t.Fatal(err)
				}
			}
			req, err := http.NewRequest(r.Method, ts.url+r.Path, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if r.ContentType != "" {
				req.Header.Set("Content-Type", r.ContentType)
			}
			var sent struct {
				Stream         bool              `json:"stream"`
				Tools          []json.RawMessage `json:"tools"`
				ToolChoice     json.RawMessage   `json:"tool_choice"`
				ResponseFormat struct {
					Type string `json:"type"`
				} `json:"response_format"`
			}
			json.Unmarshal(body, &sent)
			grammar := len(sent.Tools) > 0 || sent.ResponseFormat.Type == "json_schema"
			if grammar {
				// A model whose own template renders tools, and the
				// JSON-schema converter.
				if req, err = http.NewRequest(r.Method, tools.url+r.Path, bytes.NewReader(body)); err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", r.ContentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				e := decode[struct{ Error apiError }](t, resp.Body)
				t.Fatalf("%s: %s %q", r.SDK, resp.Status, e.Error.Message)
			}
			switch {
			case grammar:
				checkGrammarAnswer(t, resp.Body, sent.Stream, string(sent.ToolChoice), sent.ResponseFormat.Type == "json_schema")
				// A random-weight model's strings run long: again with room
				// to finish, and the byte tokens '"' (34) and '}' (125)
				// favoured where the grammar allows them, so that whole
				// calls and answers are checked.
				var fields map[string]any
				json.Unmarshal(body, &fields)
				delete(fields, "max_completion_tokens")
				fields["max_tokens"], fields["seed"] = 300, 1
				fields["logit_bias"] = map[string]float64{"34": 10, "125": 10}
				longer, _ := json.Marshal(fields)
				resp := post(t, context.Background(), tools.url, string(longer))
				defer resp.Body.Close()
				if !checkGrammarAnswer(t, resp.Body, sent.Stream, string(sent.ToolChoice), sent.ResponseFormat.Type == "json_schema") {
					unfinished++
				}
			case r.Path == "/v1/models":
				l := decode[struct {
					Object string
					Data   []model
				}](t, resp.Body)
				if l.Object != "list" || len(l.Data) != 1 || l.Data[0].ID != "memload-test" {
					t.Errorf("models %+v", l)
				}
			case strings.HasPrefix(r.Path, "/v1/models/"):
				if m := decode[model](t, resp.Body); m.ID != "memload-test" || m.Object != "model" {
					t.Errorf("model %+v", m)
				}
			case sent.Stream:
				text, last, _ := streamed(t, readSSE(t, resp.Body))
				if text == "" && *last.Choices[0].FinishReason != "stop" {
					t.Errorf("empty answer, finish %+v", last)
				}
			default:
				a := decode[chatResponse](t, resp.Body)
				if len(a.Choices) != 1 || a.Choices[0].Message == nil || a.Choices[0].Message.Role != "assistant" || a.Usage == nil {
					t.Errorf("answer %+v", a)
				}
			}
		})
	}
	t.Logf("%d grammar-constrained answers cut by max_tokens", unfinished)
	if sdks["openai-go"] < 4 || sdks["openai"] < 4 {
		t.Errorf("recordings per SDK %v: want both SDKs' calls", sdks)
	}
}

// TestGoSDK uses the official Go SDK against the chatbot, as a Go program
// would: a plain request, a stream gathered by the SDK's accumulator and
// fed back, model discovery, and the SDK's view of a refusal.
func TestGoSDK(t *testing.T) {
	ts := newTestServer(t, testConfig(t, map[string]string{"MODEL_NAME": "memload-test"}))
	ctx := context.Background()
	client := openai.NewClient(option.WithBaseURL(ts.url+"/v1/"), option.WithAPIKey("unused"))
	msgs := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Hello")}

	c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "anything", Messages: msgs,
		MaxCompletionTokens: openai.Int(6), Temperature: openai.Float(0), PresencePenalty: openai.Float(0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message.Content == "" || c.Usage.CompletionTokens != 6 || c.Model != "memload-test" {
		t.Errorf("completion %+v", c)
	}

	params := openai.ChatCompletionNewParams{Model: "anything", Messages: msgs, MaxTokens: openai.Int(6), Temperature: openai.Float(0),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}}
	var acc openai.ChatCompletionAccumulator
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	// Greedy: the stream holds the same answer.
	if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != c.Choices[0].Message.Content || acc.Usage.CompletionTokens != 6 {
		t.Errorf("accumulated %+v, want %q", acc.ChatCompletion, c.Choices[0].Message.Content)
	}
	params.Messages = append(msgs, acc.Choices[0].Message.ToParam(), openai.UserMessage("More"))
	if _, err := client.Chat.Completions.New(ctx, params); err != nil {
		t.Fatalf("second turn: %v", err)
	}

	page, err := client.Models.List(ctx)
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != "memload-test" {
		t.Errorf("models: %+v %v", page, err)
	}
	if m, err := client.Models.Get(ctx, "memload-test"); err != nil || m.ID != "memload-test" {
		t.Errorf("model: %+v %v", m, err)
	}
	var apiErr *openai.Error
	if _, err := client.Models.Get(ctx, "gpt-4o"); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Errorf("another model: %v", err)
	}

	before := ts.requests.Load()
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "x", Messages: msgs, Modalities: []string{"text", "audio"}})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "modalities" || !strings.Contains(apiErr.Message, "`modalities` is not supported") {
		t.Errorf("modalities: %v", err)
	}
	if n := ts.requests.Load() - before; n != 1 {
		t.Errorf("the SDK sent a refused request %d times", n)
	}
}

// TestRequestFields goes through OpenAI's chat-completions request fields:
// each is honoured, ignored (it cannot change the answer) or refused with
// a 400 that names it and says why.
func TestRequestFields(t *testing.T) {
	ts := newTestServer(t, testConfig(t, nil))
	const msgs = `"messages":[{"role":"user","content":"Hi"}],"max_tokens":2`
	for _, body := range []string{
		`"model":"gpt-4o","n":1,"temperature":0.5,"top_p":0.9,"seed":1,"stop":["x"],"max_completion_tokens":2`,
		`"top_k":5,"min_p":0.1,"reasoning_format":"none"`,
		`"frequency_penalty":0,"presence_penalty":0,"logit_bias":{},"logprobs":false,"top_logprobs":0`,
		`"response_format":{"type":"text"},"tools":[],"tool_choice":"none","functions":[],"function_call":"none","modalities":["text"]`,
		`"audio":null,"reasoning_effort":null,"verbosity":null,"web_search_options":null,"moderation":null`,
		`"user":"u","metadata":{"a":"b"},"store":true,"service_tier":"auto","safety_identifier":"s","prompt_cache_key":"k",
		 "prompt_cache_retention":"24h","prompt_cache_options":{"mode":"implicit"},"parallel_tool_calls":true,
		 "prediction":{"type":"content","content":"Hello"},"stream_options":{"include_usage":false,"include_obfuscation":true}`,
	} {
		resp := post(t, context.Background(), ts.url, "{"+msgs+","+body+"}")
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", body, resp.Status)
		}
	}
	// Message fields that SDKs copy back from answers, and names.
	resp := post(t, context.Background(), ts.url, `{"max_tokens":2,"messages":[{"role":"user","content":"Hi","name":"ada"},
		{"role":"assistant","content":[{"type":"text","text":"Yes"},{"type":"refusal","refusal":"no"}],"refusal":null,"parsed":null,
		 "annotations":[],"reasoning_content":"hm","tool_calls":[],"function_call":null,"audio":null},
		{"role":"user","content":[{"type":"text","text":"Go on","prompt_cache_breakpoint":{}}]}]}`)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("copied-back message fields: %s", resp.Status)
	}

	for _, tc := range []struct{ body, param, why string }{
		{`"response_format":{"type":"xml"}`, "response_format", `use "text", "json_object" or "json_schema"`},
		{`"tools":[{"type":"custom","custom":{"name":"f"}}]`, "tools[0].type", `only "function" tools`},
		{`"functions":[{"name":"f"}]`, "functions", "send them as tools"},
		{`"function_call":"auto"`, "function_call", "use tools and tool_choice"},
		{`"messages":[{"role":"function","content":"4","name":"f"}]`, "messages[0].role", `send results as role "tool"`},
		{`"audio":{"voice":"alloy","format":"mp3"}`, "audio", "text only"},
		{`"modalities":["text","audio"]`, "modalities", "text only"},
		{`"reasoning_effort":"low"`, "reasoning_effort", "cannot be steered"},
		{`"verbosity":"low"`, "verbosity", "cannot be steered"},
		{`"web_search_options":{}`, "web_search_options", "does not search"},
		{`"moderation":{"model":"omni-moderation-latest"}`, "moderation", "no moderation model"},
		{`"reasoning_format":"deepseek-legacy"`, "reasoning_format", "use \"deepseek\""},
		{`"messages":[{"role":"user","content":"a","audio":{"id":"x"}}]`, "messages[0].audio", "text only"},
		{`"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/cat.png"}}]}]`, "messages[0].content", "text only"},
	} {
		body := `{"messages":[{"role":"user","content":"Hi"}],` + tc.body + `}`
		if strings.HasPrefix(tc.body, `"messages"`) {
			body = "{" + tc.body + "}"
		}
		resp := post(t, context.Background(), ts.url, body)
		e := decode[struct{ Error apiError }](t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || e.Error.Param != tc.param || !strings.Contains(e.Error.Message, "not supported") ||
			!strings.Contains(e.Error.Message, tc.why) || resp.Header.Get("X-Should-Retry") != "false" {
			t.Errorf("%s: %s %+v, x-should-retry %q; want 400 naming %s, saying %q", tc.body, resp.Status, e.Error,
				resp.Header.Get("X-Should-Retry"), tc.param, tc.why)
		}
	}
}

// TestSampling checks that penalties, logit_bias and response_format
// json_object reach llama.cpp's sampler (the answers change, the JSON
// parses), and that out-of-range values are 400s.
func TestSampling(t *testing.T) {
	ts := newTestServer(t, testConfig(t, map[string]string{"MAX_TOKENS": "200"}))
	const ask = `"messages":[{"role":"user","content":"Hello there"}],"temperature":0`
	answer := func(t *testing.T, fields string) (string, string) {
		t.Helper()
		resp := post(t, context.Background(), ts.url, `{`+ask+`,`+fields+`}`)
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", fields, resp.Status)
		}
		a := decode[chatResponse](t, resp.Body)
		return a.Choices[0].Message.Content, *a.Choices[0].FinishReason
	}
	plain, _ := answer(t, `"max_tokens":24`)
	for _, fields := range []string{`"frequency_penalty":2`, `"presence_penalty":2`, `"frequency_penalty":-2,"presence_penalty":-2`} {
		if got, _ := answer(t, `"max_tokens":24,`+fields); got == plain {
			t.Errorf("%s: the greedy answer %q is the unpenalised one", fields, got)
		}
	}
	// +100 on one token: the greedy answer is that token, 24 times.
	if got, _ := answer(t, `"max_tokens":24,"logit_bias":{"100":100}`); got == plain || got == "" || got != strings.Repeat(got[:len(got)/24], 24) {
		t.Errorf("logit_bias: the greedy answer %q is not one token repeated (unbiased: %q)", got, plain)
	}

	text, finish := answer(t, `"max_tokens":200,"response_format":{"type":"json_object"}`)
	t.Logf("json_object: %s %q", finish, text)
	if finish == "stop" {
		var v map[string]any
		if err := json.Unmarshal([]byte(text), &v); err != nil {
			t.Errorf("json_object answer %q is not a JSON object: %v", text, err)
		}
	} else if !strings.HasPrefix(text, "{") {
		t.Errorf("json_object answer %q does not start a JSON object", text)
	}

	// llm checks the ranges; the 400 names the request's field.
	for _, tc := range []struct{ fields, param, want string }{
		{`"frequency_penalty":2.5`, "frequency_penalty", "FrequencyPenalty 2.5 is out of range"},
		{`"presence_penalty":-3`, "presence_penalty", "PresencePenalty -3 is out of range"},
		{`"logit_bias":{"42":101}`, "logit_bias", "LogitBias of token 42 is 101"},
		{`"logit_bias":{"hello":1}`, "logit_bias", `logit_bias key "hello" is not a token id`},
		{`"logit_bias":{"99999999":1}`, "logit_bias", "LogitBias token 99999999 is not in the vocabulary"},
	} {
		resp := post(t, context.Background(), ts.url, `{`+ask+`,`+tc.fields+`}`)
		e := decode[struct{ Error apiError }](t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || e.Error.Param != tc.param || !strings.Contains(e.Error.Message, tc.want) {
			t.Errorf("%s: %s %+v, want 400 naming %s, saying %q", tc.fields, resp.Status, e.Error, tc.param, tc.want)
		}
	}
}

func TestModels(t *testing.T) {
	ts := newTestServer(t, testConfig(t, map[string]string{"MODEL_NAME": "org/my-model"}))
	for _, tc := range []struct {
		path   string
		status int
		want   string
	}{
		{"/v1/models", 200, `"data":[{"id":"org/my-model","object":"model"`},
		{"/v1/models/org/my-model", 200, `{"id":"org/my-model","object":"model"`},
		{"/v1/models/gpt-4o", 404, `"code":"model_not_found"`},
		{"/v1/embeddings", 404, `unknown endpoint GET /v1/embeddings`},
	} {
		resp, err := http.Get(ts.url + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(buf.String(), tc.want) || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %s %s, want %d with %s", tc.path, resp.Status, buf.String(), tc.status, tc.want)
		}
	}
}

func TestCORS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		origin  string
		allowed bool
	}{
		{"local page", nil, "http://localhost:3000", true},
		{"local by address", nil, "http://127.0.0.1:5173", true},
		{"foreign page", nil, "https://evil.example", false},
		{"listed origin", map[string]string{"CORS_ALLOW_ORIGINS": "https://chat.example.com, https://other.example"}, "https://chat.example.com", true},
		{"any", map[string]string{"CORS_ALLOW_ORIGINS": "*"}, "https://anyone.example", true},
		{"under Lambda, loopback is not special", map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9"}, "http://localhost:3000", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, testConfig(t, tc.env))
			// The preflight of the browser's fetch, as the OpenAI SDK in a
			// page would send it.
			req, _ := http.NewRequest(http.MethodOptions, ts.url+"/v1/chat/completions", nil)
			req.Header.Set("Origin", tc.origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,x-stainless-os")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			h := resp.Header
			if tc.allowed {
				if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != tc.origin ||
					!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
					h.Get("Access-Control-Allow-Headers") != "authorization,content-type,x-stainless-os" {
					t.Errorf("preflight: %s %v", resp.Status, h)
				}
			} else if resp.StatusCode != http.StatusForbidden || h.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("preflight from a foreign origin: %s %v", resp.Status, h)
			}

			// The request itself.
			req, _ = http.NewRequest(http.MethodPost, ts.url+"/v1/chat/completions", strings.NewReader(`{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}`))
			req.Header.Set("Origin", tc.origin)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Access-Control-Allow-Origin"); resp.StatusCode != 200 || (got == tc.origin) != tc.allowed {
				t.Errorf("POST: %s, Access-Control-Allow-Origin %q", resp.Status, got)
			}
		})
	}
	for _, bad := range []string{"chat.example.com", "https://chat.example.com/path", "ftp://x"} {
		if _, err := configFromEnv(func(k string) string {
			return map[string]string{"MODEL_URI": "m.gguf", "CORS_ALLOW_ORIGINS": bad}[k]
		}); err == nil || !strings.Contains(err.Error(), "is not an origin") {
			t.Errorf("CORS_ALLOW_ORIGINS=%s: %v", bad, err)
		}
	}
}

// checkGrammarAnswer checks an answer to a recorded request with tools or
// a JSON schema (the recordings' get_weather(city) and weather schema):
// every call parses, streams as deltas and matches its schema; a named
// tool_choice gets a call; structured output matches the schema. An
// answer cut by max_tokens is only a prefix, and is not checked: it
// returns whether the answer finished.
func checkGrammarAnswer(t *testing.T, body io.Reader, stream bool, toolChoice string, schema bool) (finished bool) {
	t.Helper()
	type call struct{ name, args string }
	var calls []call
	var content, finish string
	if stream {
		var sb strings.Builder
		for _, e := range readSSE(t, body) {
			if e.data == "" || e.data == "[DONE]" {
				continue
			}
			var c chatResponse
			if err := json.Unmarshal([]byte(e.data), &c); err != nil {
				t.Fatal(err)
			}
			if len(c.Choices) == 0 {
				continue
			}
			d := c.Choices[0].Delta
			sb.WriteString(d.Content)
			for _, tc := range d.ToolCalls {
				switch {
				case *tc.Index == len(calls) && tc.ID != "" && tc.Type == "function" && tc.Function.Name != "":
					calls = append(calls, call{name: tc.Function.Name})
				case *tc.Index == len(calls)-1 && tc.ID == "" && tc.Function.Name == "":
				default:
					t.Fatalf("tool call delta %+v after %d calls", tc, len(calls))
				}
				calls[*tc.Index].args += tc.Function.Arguments
			}
			if f := c.Choices[0].FinishReason; f != nil {
				finish = *f
			}
		}
		content = sb.String()
	} else {
		a := decode[chatResponse](t, body)
		content, finish = a.Choices[0].Message.Content, *a.Choices[0].FinishReason
		for _, tc := range a.Choices[0].Message.ToolCalls {
			calls = append(calls, call{tc.Function.Name, tc.Function.Arguments})
		}
	}
	t.Logf("finish %s, calls %q, content %q", finish, calls, content)
	if finish == "length" {
		return false
	}
	if strings.Contains(toolChoice, "get_weather") && (len(calls) == 0 || finish != "tool_calls") {
		t.Errorf("tool_choice %s: no call (finish %s)", toolChoice, finish)
	}
	for _, c := range calls {
		var args struct {
			City *string `json:"city"`
		}
		if c.name != "get_weather" || json.Unmarshal([]byte(c.args), &args) != nil || args.City == nil {
			t.Errorf("call %s(%s) does not match get_weather's schema", c.name, c.args)
		}
	}
	if schema {
		var w struct {
			City    *string  `json:"city"`
			Celsius *float64 `json:"celsius"`
			Sunny   *bool    `json:"sunny"`
		}
		dec := json.NewDecoder(strings.NewReader(content))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&w); err != nil || w.City == nil || w.Celsius == nil || w.Sunny == nil {
			t.Errorf("structured answer %q does not match the weather schema: %v", content, err)
		}
	}
	return true
}
