package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/memload/memload/internal/idle"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
)

// tinyModel is a generated random-weight model shared by the tests: real
// llama.cpp work at thousands of tokens a second.
var tinyModel string

func TestMain(m *testing.M) {
	// go test without make: the llama.cpp libraries `make llama` installs.
	if os.Getenv(llm.LibraryEnv) == "" {
		if root, err := testutil.RepoRoot(); err == nil {
			platform := map[string]string{"amd64": "linux-x64", "arm64": "linux-arm64"}[runtime.GOARCH]
			os.Setenv(llm.LibraryEnv, filepath.Join(root, ".bin", "llama", platform))
		}
	}
	dir, err := os.MkdirTemp("", "chatbot-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tinyModel = filepath.Join(dir, "tiny-qwen2.gguf")
	if err := testutil.WriteModel(tinyModel, testutil.TinyConfig("qwen2")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	for _, f := range cleanups {
		f()
	}
	if code == 0 {
		http.DefaultClient.CloseIdleConnections()
		// llm's low-priority thread lives as long as the process.
		if err := goleak.Find(goleak.IgnoreAnyFunction(idle.Worker)); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testConfig(t *testing.T, env map[string]string) config {
	t.Helper()
	e := map[string]string{"MODEL_URI": tinyModel, "THREADS": "1", "CONTEXT_SIZE": "1024", "MAX_TOKENS": "64"}
	for k, v := range env {
		e[k] = v
	}
	cfg, err := configFromEnv(func(k string) string { return e[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// find returns the log records with this message.
func (b *logBuffer) find(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

type testServer struct {
	*server
	url  string
	logs *logBuffer
}

// newTestServer serves the chatbot on a local port, with the model loading
// in the background as it does in the function.
func newTestServer(t *testing.T, cfg config) *testServer {
	t.Helper()
	logs := &logBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	// Metric lines go with the logs, as under Lambda.
	met := &metrics{w: logs, namespace: cfg.MetricsNamespace, dims: map[string]string{"FunctionName": cfg.FunctionName, dimensionModel: cfg.ModelName}, now: time.Now}
	l := startLoad(context.Background(), cfg, logger, met)
	t.Cleanup(l.close)
	s := newServer(cfg, l, logger)
	s.metrics = met
	return serve(t, s, logs)
}

func serve(t *testing.T, s *server, logs *logBuffer) *testServer {
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return &testServer{server: s, url: ts.URL, logs: logs}
}

func post(t *testing.T, ctx context.Context, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func decode[T any](t *testing.T, r io.Reader) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(r).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// sseEvent is one server-sent event: its data, or a comment.
type sseEvent struct{ data, comment string }

// readSSE reads a whole event stream, checking its framing: events are
// "data: " or ": " lines ended by a blank line.
func readSSE(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	s := string(body)
	if !strings.HasSuffix(s, "\n\n") {
		t.Fatalf("stream does not end with a blank line: %q", s[max(0, len(s)-80):])
	}
	var events []sseEvent
	for _, ev := range strings.Split(strings.TrimSuffix(s, "\n\n"), "\n\n") {
		switch {
		case strings.Contains(ev, "\n"):
			t.Fatalf("event of several lines: %q", ev)
		case strings.HasPrefix(ev, "data: "):
			events = append(events, sseEvent{data: ev[len("data: "):]})
		case strings.HasPrefix(ev, ": "):
			events = append(events, sseEvent{comment: ev[2:]})
		default:
			t.Fatalf("malformed event %q", ev)
		}
	}
	return events
}

// streamed checks an OpenAI chunk stream and returns its text and the final
// chunks.
func streamed(t *testing.T, events []sseEvent) (text string, last chatResponse, usageChunk *chatResponse) {
	t.Helper()
	var data []string
	for _, e := range events {
		if e.comment == "" {
			data = append(data, e.data)
		}
	}
	if len(data) < 3 || data[len(data)-1] != "[DONE]" {
		t.Fatalf("want role, content, finish chunks then [DONE], got %q", data)
	}
	var sb strings.Builder
	finished := false
	for i, d := range data[:len(data)-1] {
		var c chatResponse
		dec := json.NewDecoder(strings.NewReader(d))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("chunk %d %q: %v", i, d, err)
		}
		if c.Object != "chat.completion.chunk" || !strings.HasPrefix(c.ID, "chatcmpl-") {
			t.Errorf("chunk %d: object %q id %q", i, c.Object, c.ID)
		}
		switch {
		case finished:
			if len(c.Choices) != 0 || c.Usage == nil {
				t.Fatalf("after the finish chunk, only a usage chunk may come: %q", d)
			}
			usageChunk = &c
		case len(c.Choices) != 1:
			t.Fatalf("chunk %d has %d choices", i, len(c.Choices))
		case i == 0:
			if c.Choices[0].Delta.Role != llm.RoleAssistant {
				t.Errorf("first chunk %q does not give the role", d)
			}
		case c.Choices[0].FinishReason != nil:
			finished, last = true, c
		default:
			sb.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if !finished {
		t.Fatal("no chunk with a finish_reason")
	}
	return sb.String(), last, usageChunk
}

func TestChat(t *testing.T) {
	ts := newTestServer(t, testConfig(t, nil))
	ctx := context.Background()
	const ask = `"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}],"temperature":0,"max_tokens":12`

	resp := post(t, ctx, ts.url, `{"model":"whatever",`+ask+`}`)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	full := decode[chatResponse](t, resp.Body)
	if full.Object != "chat.completion" || len(full.Choices) != 1 || full.Choices[0].Message == nil {
		t.Fatalf("answer %+v", full)
	}
	c := full.Choices[0]
	if c.Message.Role != llm.RoleAssistant || c.Message.Content == "" || c.FinishReason == nil || *c.FinishReason != "length" {
		t.Errorf("choice %+v, want a non-empty assistant message cut at max_tokens", c)
	}
	if u := full.Usage; u == nil || u.CompletionTokens != 12 || u.PromptTokens == 0 || u.TotalTokens != u.PromptTokens+12 {
		t.Errorf("usage %+v", u)
	}
	if full.Model != "tiny-qwen2.gguf" {
		t.Errorf("model %q, want the file's name", full.Model)
	}

	for _, includeUsage := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream include_usage=%v", includeUsage), func(t *testing.T) {
			body := fmt.Sprintf(`{"stream":true,"stream_options":{"include_usage":%v},%s}`, includeUsage, ask)
			resp := post(t, ctx, ts.url, body)
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
			}
			text, last, u := streamed(t, readSSE(t, resp.Body))
			// Greedy decoding: the stream holds the same answer.
			if text != string(c.Message.Content) {
				t.Errorf("streamed %q, not the answer %q", text, c.Message.Content)
			}
			if *last.Choices[0].FinishReason != "length" || last.Timings == nil || last.Timings.PredictedN != 12 {
				t.Errorf("finish chunk %+v", last)
			}
			if includeUsage != (u != nil) {
				t.Fatalf("include_usage %v, usage chunk %+v", includeUsage, u)
			}
			if u != nil && *u.Usage != *full.Usage {
				t.Errorf("usage %+v, want %+v", *u.Usage, *full.Usage)
			}
		})
	}

	// Every answer is logged with its speeds.
	recs := ts.logs.find("chat")
	if len(recs) != 3 {
		t.Fatalf("%d chat log lines, want 3", len(recs))
	}
	for _, k := range []string{"prompt_tokens", "prompt_tps", "generated_tokens", "generate_tps", "first_token_ms"} {
		if _, ok := recs[0][k].(float64); !ok {
			t.Errorf("chat log line lacks %s: %v", k, recs[0])
		}
	}
}

func TestContentParts(t *testing.T) {
	ts := newTestServer(t, testConfig(t, nil))
	for _, body := range []string{
		`{"messages":[{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":" there"}]}],"max_tokens":2}`,
		`{"messages":[{"role":"developer","content":"Be kind"},{"role":"user","content":"Hi"}],"stop":"x","seed":7,"n":1,"max_completion_tokens":2}`,
		`{"messages":[{"role":"user","content":"Hi"}],"stop":["a","b"],"top_p":0.5,"user":"me","max_tokens":2}`,
	} {
		resp := post(t, context.Background(), ts.url, body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", body, resp.Status)
		}
	}
}

func TestBadRequests(t *testing.T) {
	cfg := testConfig(t, map[string]string{"MAX_BODY_BYTES": "4096", "MAX_PROMPT_BYTES": "1000", "CONTEXT_SIZE": "64"})
	ts := newTestServer(t, cfg)
	long := strings.Repeat("word ", 150) // fits the byte limit, not the 64-token context
	for _, tc := range []struct {
		name, body string
		status     int
		message    string
	}{
		{"empty body", ``, 400, "the body is empty"},
		{"malformed JSON", `{"messages":[`, 400, "malformed JSON"},
		{"not an object", `[1,2]`, 400, "must be a JSON object"},
		{"two values", `{"messages":[{"role":"user","content":"a"}]} {}`, 400, "more than one JSON value"},
		{"unknown field", `{"messages":[{"role":"user","content":"a"}],"colour":"blue"}`, 400, "`colour` is not supported: it is not a field of OpenAI's chat completions API"},
		{"unknown message field", `{"messages":[{"role":"user","content":"a","mood":"x"}]}`, 400, "`messages[0].mood` is not supported"},
		{"wrong type", `{"messages":[{"role":"user","content":"a"}],"max_tokens":"5"}`, 400, "max_tokens must be int"},
		{"wrong type in a message", `{"messages":[{"role":"user","content":"a"},{"role":7}]}`, 400, "field messages[1].role must be string"},
		{"message not an object", `{"messages":["hi"]}`, 400, "messages[0] must be a JSON object"},
		{"no messages", `{"messages":[]}`, 400, "messages is empty"},
		{"bad role", `{"messages":[{"role":"narrator","content":"a"}]}`, 400, `role "narrator" is not supported`},
		{"tool result without its call's id", `{"messages":[{"role":"tool","content":"a"}]}`, 400, "without a tool_call_id"},
		{"image part", `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, "`messages[0].content` is not supported: a part of type \"image_url\": the model reads text only"},
		{"assistant last", `{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`, 400, "end with a user message"},
		{"max_tokens over the cap", `{"messages":[{"role":"user","content":"a"}],"max_tokens":65}`, 400, "between 1 and 64"},
		{"max_tokens zero", `{"messages":[{"role":"user","content":"a"}],"max_completion_tokens":0}`, 400, "between 1 and 64"},
		{"n", `{"messages":[{"role":"user","content":"a"}],"n":2}`, 400, "only one choice"},
		{"temperature", `{"messages":[{"role":"user","content":"a"}],"temperature":3}`, 400, "temperature: Temperature 3 is out of range"},
		{"empty stop", `{"messages":[{"role":"user","content":"a"}],"stop":[""]}`, 400, "stop: Stop[0] is empty"},
		{"prompt too long", `{"messages":[{"role":"user","content":"` + strings.Repeat("a", 1001) + `"}]}`, 400, "1001 bytes of text; the limit is 1000"},
		{"body too large", `{"messages":[{"role":"user","content":"` + strings.Repeat("a", 5000) + `"}]}`, 413, "exceeds 4096 bytes"},
		{"context full", `{"messages":[{"role":"user","content":"` + long + `"}]}`, 400, "does not fit in the model's context window"},
		{"context full, streamed", `{"stream":true,"messages":[{"role":"user","content":"` + long + `"}]}`, 400, "does not fit in the model's context window"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, context.Background(), ts.url, tc.body)
			defer resp.Body.Close()
			e := decode[struct{ Error apiError }](t, resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(e.Error.Message, tc.message) {
				t.Errorf("%s %q, want %d and a message with %q", resp.Status, e.Error.Message, tc.status, tc.message)
			}
			if e.Error.Type != "invalid_request_error" {
				t.Errorf("error type %q", e.Error.Type)
			}
		})
	}
	t.Run("wrong method", func(t *testing.T) {
		resp, err := http.Get(ts.url + "/v1/chat/completions")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET: %s", resp.Status)
		}
	})
}

func TestPageAndHealth(t *testing.T) {
	ts := newTestServer(t, testConfig(t, nil))
	<-ts.load.done
	resp, err := http.Get(ts.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !bytes.Contains(page, []byte("v1/chat/completions")) {
		t.Errorf("GET /: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Get(ts.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := decode[healthAnswer](t, resp.Body)
	if resp.StatusCode != http.StatusOK || h.Status != "ready" || h.ColdStart == nil || h.ColdStart.Template != "chatml" || h.ColdStart.Threads != 1 {
		t.Errorf("healthz: %s %+v", resp.Status, h)
	}
}

// loadingServer serves with a model whose load the test finishes by calling
// the returned function.
func loadingServer(t *testing.T, cfg config) (*testServer, func(error)) {
	t.Helper()
	logs := &logBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	l := &loader{done: make(chan struct{}), phase: "download"}
	l.total.Store(300 << 20)
	l.loaded.Store(100 << 20)
	var once sync.Once
	finish := func(err error) {
		once.Do(func() {
			if err == nil {
				l.model, err = llm.Load(context.Background(), tinyModel, func(o *llm.Options) { o.Threads = 1; o.ContextSize = 1024 })
			}
			l.err = err
			if err != nil {
				l.cold.Error = err.Error()
			}
			close(l.done)
		})
	}
	t.Cleanup(func() { finish(errors.New("test over")); l.close() })
	s := newServer(cfg, l, logger)
	s.progressEvery = 10 * time.Millisecond
	return serve(t, s, logs), finish
}

func TestWaitForModel(t *testing.T) {
	ts, finish := loadingServer(t, testConfig(t, nil))
	ctx := context.Background()

	resp, err := http.Get(ts.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	h := decode[healthAnswer](t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || h.Status != "loading" || h.Phase != "download" || h.Loaded != 100<<20 {
		t.Errorf("healthz while loading: %s %+v", resp.Status, h)
	}

	// A streamed request says that it waits, while it waits.
	resp = post(t, ctx, ts.url, `{"stream":true,"messages":[{"role":"user","content":"Hi"}],"max_tokens":4}`)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	blank, _ := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ": model loading (download, 100 of 300 MiB)") || blank != "\n" {
		t.Fatalf("first event %q %q, %v", line, blank, err)
	}

	// Meanwhile the slot is taken: a second request hears it is busy.
	busy := post(t, ctx, ts.url, `{"messages":[{"role":"user","content":"Hi"}]}`)
	e := decode[struct{ Error apiError }](t, busy.Body)
	busy.Body.Close()
	if busy.StatusCode != http.StatusTooManyRequests || busy.Header.Get("Retry-After") == "" || !strings.Contains(e.Error.Message, "one answer at a time") {
		t.Errorf("second request: %s %+v", busy.Status, e)
	}

	finish(nil)
	text, last, _ := streamed(t, readSSE(t, br))
	if text == "" || *last.Choices[0].FinishReason != "length" {
		t.Errorf("answer after the wait: %q %+v", text, last)
	}
	if recs := ts.logs.find("chat"); len(recs) != 1 || recs[0]["waited_ms"].(float64) <= 0 {
		t.Errorf("chat log lines %v, want one with waited_ms", recs)
	}
}

func TestWaitForModelTimeout(t *testing.T) {
	ts, finish := loadingServer(t, testConfig(t, map[string]string{"LOAD_WAIT": "50ms"}))
	resp := post(t, context.Background(), ts.url, `{"messages":[{"role":"user","content":"Hi"}]}`)
	e := decode[struct{ Error apiError }](t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		e.Error.Code != "model_loading" || !strings.Contains(e.Error.Message, "still loading (download, 100 of 300 MiB)") {
		t.Errorf("%s %+v", resp.Status, e)
	}

	finish(errors.New("s3load: access denied"))
	resp = post(t, context.Background(), ts.url, `{"messages":[{"role":"user","content":"Hi"}]}`)
	e = decode[struct{ Error apiError }](t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(e.Error.Message, "could not be loaded: s3load: access denied") {
		t.Errorf("after a failed load: %s %+v", resp.Status, e)
	}
}

func TestClientDisconnect(t *testing.T) {
	ts := newTestServer(t, testConfig(t, map[string]string{"MAX_TOKENS": "1000"}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Hold generation at its second piece until the server has seen the
	// client go: a tiny model would otherwise finish first.
	var quiet int32
	ts.afterPiece = func(rctx context.Context, n int) {
		if n == 2 {
			cancel()
			select {
			case <-rctx.Done():
				// llama.cpp's complaints about the aborted computation
				// would now be logged at Debug.
				for deadline := time.Now().Add(time.Second); ts.load.cancelling.Load() != 1 && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
				quiet = ts.load.cancelling.Load()
			case <-time.After(10 * time.Second):
			}
		}
	}
	// Greedy, so the answer does not end its turn before the second piece
	// by chance.
	resp := post(t, ctx, ts.url, `{"stream":true,"messages":[{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":1000}`)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	// The handler logs once Chat has returned.
	deadline := time.Now().Add(10 * time.Second)
	for len(ts.logs.find("chat cancelled")) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	recs := ts.logs.find("chat cancelled")
	if len(recs) != 1 {
		t.Fatalf("no chat cancelled log line; chat lines: %v", ts.logs.find("chat"))
	}
	if n := recs[0]["generated_tokens"].(float64); n >= 1000 || n < 2 {
		t.Errorf("generated %v tokens, want generation stopped at the disconnect", n)
	}
	if recs[0]["level"] != "INFO" || quiet != 1 || ts.load.cancelling.Load() != 0 {
		t.Errorf("level %v; cancelling while cancelled %d, after %d", recs[0]["level"], quiet, ts.load.cancelling.Load())
	}
	// The slot is free again.
	ts.afterPiece = nil
	resp = post(t, context.Background(), ts.url, `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}`)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("next request: %s", resp.Status)
	}
}

// TestLoadFromMinIO loads the model the way the function does: from S3
// into a memfd, checked against MODEL_SHA256, into llama.cpp, whose load
// runs during the download either way: repacking (the default), gated,
// each repacked weight read once its bytes came; REPACK=false, mapped.
func TestLoadFromMinIO(t *testing.T) {
	ctx := context.Background()
	env := minioModel(t)
	for k, v := range env { // the AWS SDK's default configuration reads these
		t.Setenv(k, v)
	}
	fi, err := os.Stat(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()

	for _, tc := range []struct {
		name, sha, repack string
		ok                bool
	}{
		{"verified", env["MODEL_SHA256"], "", true},
		{"verified, no repack", env["MODEL_SHA256"], "false", true},
		{"wrong sha256", strings.Repeat("ab", 32), "", false},
		{"wrong sha256, no repack", strings.Repeat("ab", 32), "false", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, testConfig(t, map[string]string{"MODEL_URI": env["MODEL_URI"], "MODEL_SHA256": tc.sha, "REPACK": tc.repack}))
			<-ts.load.done
			resp, err := http.Get(ts.url + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			h := decode[healthAnswer](t, resp.Body)
			resp.Body.Close()
			c := h.ColdStart
			if !tc.ok {
				if resp.StatusCode != http.StatusInternalServerError || h.Status != "failed" || !strings.Contains(c.Error, "SHA-256 of the bytes loaded is") {
					t.Errorf("healthz %s %+v %+v", resp.Status, h, c)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || h.Model != "tiny.gguf" || c.Bytes != size || !strings.Contains(c.Verified, "SHA-256") || h.Loaded != c.Bytes {
				t.Fatalf("healthz %s %+v %+v", resp.Status, h, c)
			}
			if c.Repack != (tc.repack == "") || !c.Early || c.Gated != c.Repack || c.Fallback != "" {
				t.Errorf("REPACK=%q: cold start says repack %v, early load %v, gated %v, fallback %q; want an early load, gated when repacking",
					tc.repack, c.Repack, c.Early, c.Gated, c.Fallback)
			}
			checkLinkAndTrail(t, c, size)
			recs := ts.logs.find("cold start")
			if len(recs) != 1 {
				t.Fatalf("%d cold start log lines", len(recs))
			}
			for _, k := range []string{"download_ms", "verify_ms", "llama_load_ms", "total_ms", "link_mib_s", "ready_after_last_byte_ms"} {
				if _, ok := recs[0][k].(float64); !ok {
					t.Errorf("cold start log line lacks %s: %v", k, recs[0])
				}
			}
			if recs[0]["link_mib_s"] != c.LinkMiBPerSec || recs[0]["ready_after_last_byte_ms"] != c.ReadyAfterLastByte ||
				recs[0]["gated"] != c.Gated || recs[0]["fallback"] != c.Fallback || recs[0]["gate_waits"] != float64(c.GateWaits) {
				t.Errorf("cold start log line %v, /healthz %+v", recs[0], c)
			}
			// And as embedded metrics, with the download's figures.
			var cold map[string]float64
			for line := range strings.Lines(ts.logs.String()) {
				if strings.Contains(line, `"cold_start"`) {
					if cold, _, err = checkEMF([]byte(line)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if cold["ModelBytes"] != float64(size) || cold["Download"] <= 0 || cold["DownloadThroughput"] <= 0 || cold["Verify"] < 0 ||
				cold["LinkThroughput"] != c.LinkMiBPerSec*(1<<20) || cold["ReadyAfterLastByte"] != c.ReadyAfterLastByte {
				t.Errorf("cold start metrics %v, /healthz %+v", cold, c)
			}
			if _, ok := cold["GateWaited"]; ok != c.Repack || cold["GateWaited"] != c.GateWaitedMS || cold["RepackFallback"] != 0 {
				t.Errorf("cold start metrics %v: want GateWaited %v and no RepackFallback when repacking (%v), neither otherwise", cold, c.GateWaitedMS, c.Repack)
			}
			resp = post(t, ctx, ts.url, `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":3}`)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("chat: %s", resp.Status)
			}
		})
	}
}

// checkLinkAndTrail checks the link's rate and the model's trail behind
// the last byte against the cold start's other figures, which ms()
// truncates to the microsecond.
func checkLinkAndTrail(t *testing.T, c *coldStart, size int64) {
	t.Helper()
	const tick = 1e-3 // ms: one truncated microsecond
	// Bytes over the time they flowed, first byte to last: within the
	// rates the two truncated times allow, and no slower than the
	// download counted from the first request.
	t.Logf("link %.1f MiB/s, download %.1f MiB/s, ready %.2f ms after the last byte (verify %.2f, llama.cpp %.2f)",
		c.LinkMiBPerSec, c.MiBPerSec, c.ReadyAfterLastByte, c.VerifyMS, c.LlamaMS)
	mib, flow := float64(size)/(1<<20), (c.DownloadMS-c.FirstByte)/1000
	lo, hi := mib/(flow+2*tick/1000), mib/(flow-2*tick/1000)
	if flow <= 2*tick/1000 {
		hi = math.Inf(1)
	}
	if c.LinkMiBPerSec <= 0 || c.LinkMiBPerSec < lo || c.LinkMiBPerSec > hi || c.LinkMiBPerSec < c.MiBPerSec {
		t.Errorf("link %v MiB/s, want %v to %v (%d bytes in %v s), at least the download's %v", c.LinkMiBPerSec, lo, hi, size, flow, c.MiBPerSec)
	}
	// The model is ready after the verification and the llama.cpp load
	// that follow the last byte (a load during the download: after the
	// verification), and before the cold start less the download and
	// everything before it.
	after := c.VerifyMS + c.LlamaMS
	if c.Early {
		after = c.VerifyMS
	}
	if r := c.ReadyAfterLastByte; r <= 0 || r < after-3*tick || r > c.TotalMS-c.ProcessMS-c.ConfigMS-c.DownloadMS+5*tick {
		t.Errorf("ready %v ms after the last byte, want verify %v (+ llama.cpp %v ms unless early: %v) at least, total %v - process %v - config %v - download %v ms at most",
			r, c.VerifyMS, c.LlamaMS, c.Early, c.TotalMS, c.ProcessMS, c.ConfigMS, c.DownloadMS)
	}
}

// createBucket creates a bucket or fails the test.
func createBucket(t *testing.T, m *testutil.MinIO, bucket string) {
	t.Helper()
	if err := m.CreateBucket(context.Background(), bucket); err != nil {
		t.Fatal(err)
	}
}

func s3Env(m *testutil.MinIO) map[string]string {
	return map[string]string{
		"AWS_ENDPOINT_URL_S3":         m.Endpoint,
		"AWS_ACCESS_KEY_ID":           m.AccessKey,
		"AWS_SECRET_ACCESS_KEY":       m.SecretKey,
		"AWS_REGION":                  m.Region,
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	}
}
