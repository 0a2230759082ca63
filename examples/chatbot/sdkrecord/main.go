// Command sdkrecord records the request bodies that OpenAI's official SDKs
// send, for the chatbot's tests (testdata/sdk): the Go SDK,
// github.com/openai/openai-go/v3 at the version in go.mod, and the Node SDK,
// npm's openai, installed into a temporary directory with the machine's
// Node.js and npm. Both talk to a capturing server on 127.0.0.1 that
// answers as OpenAI's API does (with reasoning_content, as the chatbot does
// for a thinking model), so that the multi-turn calls feed back what a
// client copies from a real answer.
//
// From examples/chatbot, `go generate` runs
//
//	go run ./sdkrecord -out testdata/sdk
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

//go:embed record.mjs
var nodeScript []byte

// modelID is the model the recordings name: the tests serve under it.
const modelID = "memload-test"

// recorded is one request, as listed in requests.json.
type recorded struct {
	Name        string `json:"name"`
	SDK         string `json:"sdk"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	ContentType string `json:"content_type,omitempty"`
	UserAgent   string `json:"user_agent,omitempty"`
	BodyFile    string `json:"body_file,omitempty"` // the body's exact bytes
}

func main() {
	out := flag.String("out", "testdata/sdk", "directory for requests.json and the bodies")
	nodeVersion := flag.String("openai-node", "6", "npm version of the openai package")
	flag.Parse()
	if err := run(*out, *nodeVersion); err != nil {
		fmt.Fprintln(os.Stderr, "sdkrecord:", err)
		os.Exit(1)
	}
}

func run(out, nodeVersion string) error {
	rec := &recorder{bodies: map[string][]byte{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: rec}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String() + "/v1/"

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rec.sdk = "openai-go " + goSDKVersion()
	if err := recordGo(ctx, base); err != nil {
		return fmt.Errorf("Go SDK: %w", err)
	}
	ver, err := recordNode(ctx, base, nodeVersion)
	if err != nil {
		return fmt.Errorf("Node SDK: %w", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i := range rec.list {
		if strings.HasPrefix(rec.list[i].Name, "node-") {
			rec.list[i].SDK = "openai (npm) " + ver + ", Node.js " + nodeJSVersion()
		}
	}

	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(out, "*.json"))
	for _, f := range old {
		os.Remove(f)
	}
	for _, r := range rec.list {
		if r.BodyFile != "" {
			if err := os.WriteFile(filepath.Join(out, r.BodyFile), rec.bodies[r.Name], 0o644); err != nil {
				return err
			}
		}
	}
	manifest, err := json.MarshalIndent(rec.list, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "requests.json"), append(manifest, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("recorded %d requests into %s\n", len(rec.list), out)
	return nil
}

// recorder keeps every request and answers it as OpenAI's API would.
type recorder struct {
	mu     sync.Mutex
	sdk    string
	list   []recorded
	bodies map[string][]byte
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	name := r.Header.Get("X-Record-As")
	if name == "" {
		http.Error(w, "no X-Record-As header", http.StatusBadRequest)
		return
	}
	rec.mu.Lock()
	if slices.ContainsFunc(rec.list, func(x recorded) bool { return x.Name == name }) {
		rec.mu.Unlock()
		http.Error(w, "recorded twice: "+name, http.StatusConflict) // a retry would hide a bug
		return
	}
	e := recorded{Name: name, SDK: rec.sdk, Method: r.Method, Path: r.URL.Path,
		ContentType: r.Header.Get("Content-Type"), UserAgent: r.Header.Get("User-Agent")}
	if len(body) > 0 {
		e.BodyFile = name + ".json"
		rec.bodies[name] = body
	}
	rec.list = append(rec.list, e)
	rec.mu.Unlock()

	created := time.Now().Unix()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/v1/models":
		fmt.Fprintf(w, `{"object":"list","data":[{"id":%q,"object":"model","created":%d,"owned_by":"memload"}]}`, modelID, created)
	case strings.HasPrefix(r.URL.Path, "/v1/models/"):
		fmt.Fprintf(w, `{"id":%q,"object":"model","created":%d,"owned_by":"memload"}`, strings.TrimPrefix(r.URL.Path, "/v1/models/"), created)
	case r.URL.Path == "/v1/chat/completions":
		var req struct {
			Stream        bool `json:"stream"`
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
			Tools          []json.RawMessage `json:"tools"`
			ResponseFormat struct {
				Type string `json:"type"`
			} `json:"response_format"`
			Messages []struct {
				Role string `json:"role"`
			} `json:"messages"`
		}
		json.Unmarshal(body, &req)
		const usage = `{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}`
		if len(req.Tools) > 0 && req.Messages[len(req.Messages)-1].Role != "tool" {
			rec.toolCall(w, req.Stream, created)
			return
		}
		if req.ResponseFormat.Type == "json_schema" {
			fmt.Fprintf(w, `{"id":"chatcmpl-rec","object":"chat.completion","created":%d,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":%q,"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":%s}`,
				created, modelID, `{"city":"Paris","celsius":21,"sunny":true}`, usage)
			return
		}
		if !req.Stream {
			fmt.Fprintf(w, `{"id":"chatcmpl-rec","object":"chat.completion","created":%d,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there.","reasoning_content":"The user greets me.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":%s}`,
				created, modelID, usage)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := func(choices, extra string) {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-rec\",\"object\":\"chat.completion.chunk\",\"created\":%d,\"model\":%q,\"choices\":%s%s}\n\n", created, modelID, choices, extra)
		}
		for _, d := range []string{
			`{"role":"assistant","content":"","refusal":null}`,
			`{"reasoning_content":"The user greets me."}`,
			`{"content":"Hello"}`,
			`{"content":" there."}`,
		} {
			chunk(`[{"index":0,"delta":`+d+`,"logprobs":null,"finish_reason":null}]`, "")
		}
		chunk(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`, "")
		if req.StreamOptions.IncludeUsage {
			chunk(`[]`, `,"usage":`+usage)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	default:
		http.Error(w, `{"error":{"message":"not recorded","type":"invalid_request_error"}}`, http.StatusNotFound)
	}
}

// toolCall answers with a call of get_weather, as OpenAI streams one:
// id, type and name first, then the arguments in pieces.
func (rec *recorder) toolCall(w http.ResponseWriter, stream bool, created int64) {
	const usage = `{"prompt_tokens":40,"completion_tokens":9,"total_tokens":49}`
	if !stream {
		fmt.Fprintf(w, `{"id":"chatcmpl-rec","object":"chat.completion","created":%d,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"annotations":[],"tool_calls":[{"id":"call_rec1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":%s}`,
			created, modelID, usage)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for _, c := range []string{
		`{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_rec1","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}`,
		`{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\""}}]},"logprobs":null,"finish_reason":null}`,
		`{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":\"Paris\"}"}}]},"logprobs":null,"finish_reason":null}`,
		`{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}`,
	} {
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-rec\",\"object\":\"chat.completion.chunk\",\"created\":%d,\"model\":%q,\"choices\":[%s]}\n\n", created, modelID, c)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func goSDKVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/openai/openai-go/v3" {
				return d.Version
			}
		}
	}
	return "(unknown version)"
}

func nodeJSVersion() string {
	out, _ := exec.Command("node", "--version").Output()
	return strings.TrimSpace(string(out))
}

// recordGo makes the calls a Go program makes: a plain request, a
// streamed one gathered with the SDK's accumulator, the multi-turn
// pattern of each (the answer's message fed back with ToParam), and the
// model list.
func recordGo(ctx context.Context, base string) error {
	client := openai.NewClient(option.WithBaseURL(base), option.WithAPIKey("sk-recording"), option.WithMaxRetries(0))
	as := func(name string) option.RequestOption { return option.WithHeader("X-Record-As", name) }

	msgs := []openai.ChatCompletionMessageParamUnion{
		openai.SystemMessage("You are brief."),
		openai.UserMessage("Hello!"),
	}
	params := openai.ChatCompletionNewParams{
		Model:               modelID,
		Messages:            msgs,
		MaxCompletionTokens: openai.Int(8),
		Temperature:         openai.Float(0),
		Seed:                openai.Int(42),
		Stop:                openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"\n\n"}},
		User:                openai.String("recording"),
	}
	c, err := client.Chat.Completions.New(ctx, params, as("go-create"))
	if err != nil {
		return err
	}
	params.Messages = append(slices.Clone(msgs), c.Choices[0].Message.ToParam(), openai.UserMessage("And again?"))
	if _, err := client.Chat.Completions.New(ctx, params, as("go-create-turn2")); err != nil {
		return err
	}

	params = openai.ChatCompletionNewParams{
		Model:         modelID,
		Messages:      msgs,
		MaxTokens:     openai.Int(8),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}
	var acc openai.ChatCompletionAccumulator
	stream := client.Chat.Completions.NewStreaming(ctx, params, as("go-stream"))
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		return err
	}
	if len(acc.Choices) != 1 {
		return errors.New("the accumulator has no choice")
	}
	params.Messages = append(slices.Clone(msgs), acc.Choices[0].Message.ToParam(), openai.UserMessage("And again?"))
	stream = client.Chat.Completions.NewStreaming(ctx, params, as("go-stream-turn2"))
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		return err
	}

	if err := recordGoTools(ctx, client, as); err != nil {
		return err
	}
	if _, err := client.Models.List(ctx, as("go-models-list")); err != nil {
		return err
	}
	if _, err := client.Models.Get(ctx, modelID, as("go-models-get")); err != nil {
		return err
	}
	return nil
}

// zodVersion is the npm version of zod that record.mjs's
// zodResponseFormat uses.
const zodVersion = "4"

// recordGoTools makes a tool call's round trip, streamed and gathered by
// the accumulator: the call, then its result fed back.
func recordGoTools(ctx context.Context, client openai.Client, as func(string) option.RequestOption) error {
	tool := openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
		Name:        "get_weather",
		Description: openai.String("The weather in a city"),
		Parameters: openai.FunctionParameters{
			"type":       "object",
			"properties": map[string]any{"city": map[string]any{"type": "string"}},
			"required":   []string{"city"},
		},
	})
	params := openai.ChatCompletionNewParams{
		Model:    modelID,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")},
		Tools:    []openai.ChatCompletionToolUnionParam{tool},
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{
			OfFunctionToolChoice: &openai.ChatCompletionNamedToolChoiceParam{Function: openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_weather"}},
		},
		MaxTokens:     openai.Int(64),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}
	var acc openai.ChatCompletionAccumulator
	var call openai.FinishedChatCompletionToolCall
	called := false
	stream := client.Chat.Completions.NewStreaming(ctx, params, as("go-tools-stream"))
	for stream.Next() {
		acc.AddChunk(stream.Current())
		if tc, ok := acc.JustFinishedToolCall(); ok {
			call, called = tc, true
		}
	}
	if err := stream.Err(); err != nil {
		return err
	}
	if !called {
		return errors.New("the accumulator finished no tool call")
	}
	params.Messages = append(params.Messages, acc.Choices[0].Message.ToParam(), openai.ToolMessage(`{"celsius":21}`, call.ID))
	params.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{}
	stream = client.Chat.Completions.NewStreaming(ctx, params, as("go-tools-stream-turn2"))
	for stream.Next() {
	}
	return stream.Err()
}

// recordNode installs the openai package into a temporary directory and
// runs record.mjs there. It returns the version installed.
func recordNode(ctx context.Context, base, version string) (string, error) {
	dir, err := os.MkdirTemp("", "sdkrecord-node")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "record.mjs"), nodeScript, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name":"sdkrecord","private":true,"type":"module"}`), 0o644); err != nil {
		return "", err
	}
	for _, args := range [][]string{
		{"npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "openai@" + version, "zod@" + zodVersion},
		{"node", "record.mjs", base},
	} {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Dir = dir
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("%s: %w", strings.Join(args, " "), err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", "openai", "package.json"))
	if err != nil {
		return "", err
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		return "", err
	}
	return pkg.Version, nil
}
