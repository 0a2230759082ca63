package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/memload/memload/internal/testutil"
)

// lambdaBuildFlags are those of `make zip`; keep them in step with the
// Makefile. The end-to-end tests run the bootstrap that a deployment would.
var lambdaBuildFlags = []string{"-tags", "lambda.norpc", "-ldflags", "-s -w"}

// zipLibs returns lambdazip's flags for the libraries arch's zip carries, as
// `make zip ARCH=arch` passes them (make llama zip-libs ARCH=arch installs
// them).
func zipLibs(arch string) ([]string, error) {
	root, err := testutil.RepoRoot()
	if err != nil {
		return nil, err
	}
	platform := map[string]string{"amd64": "linux-x64", "arm64": "linux-arm64"}[arch]
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[arch]
	llama := filepath.Join(root, ".bin", "llama", platform)
	libs := []string{
		filepath.Join("/usr/lib", triplet, "libffi.so.8"),
		filepath.Join(root, ".bin", "libstdc++-gcc11", arch, "libstdc++.so.6"),
	}
	for _, p := range append([]string{filepath.Join(llama, "libllama.so")}, libs...) {
		if !fileExists(p) {
			return nil, fmt.Errorf("%s is missing: run make llama zip-libs ARCH=%s (make test does)", p, arch)
		}
	}
	return []string{"-llama", llama, "-lib", libs[0], "-lib", libs[1]}, nil
}

// lambdaTasks holds, per GOARCH, the unpacked zip lambdaTask built.
var lambdaTasks = map[string]func() (string, error){
	"amd64": sync.OnceValues(func() (string, error) { return lambdaZip("amd64") }),
	"arm64": sync.OnceValues(func() (string, error) { return lambdaZip("arm64") }),
}

// lambdaTask returns the directory of this machine's zip, unpacked once.
func lambdaTask() (string, error) { return lambdaTasks[runtime.GOARCH]() }

// lambdaZip builds arch's zip as `make zip ARCH=arch` does (go build, then
// lambdazip's checks) and unpacks it, as Lambda would, into a directory it
// returns.
func lambdaZip(arch string) (string, error) {
	dir, err := os.MkdirTemp("", "chatbot-zip-"+arch)
	if err != nil {
		return "", err
	}
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	bin, zipPath := filepath.Join(dir, "bootstrap"), filepath.Join(dir, "function.zip")
	libs, err := zipLibs(arch)
	if err != nil {
		return "", err
	}
	for _, c := range []struct {
		args []string
		env  []string
	}{
		{append(append([]string{"build"}, lambdaBuildFlags...), "-o", bin, "."), []string{"GOOS=linux", "GOARCH=" + arch}},
		// lambdazip itself runs on this machine.
		{append(append([]string{"run", "./lambdazip", "-glibc", "2.34", "-arch", arch}, libs...), "-o", zipPath, bin), nil},
	} {
		cmd := exec.Command("go", c.args...)
		cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), c.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go %s: %v\n%s", strings.Join(c.args, " "), err, out)
		}
	}
	task := filepath.Join(dir, "task")
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		return "", err
	}
	defer zr.Close()
	for _, f := range zr.File {
		if err := unzipFile(f, filepath.Join(task, f.Name)); err != nil {
			return "", err
		}
	}
	return task, nil
}

// cleanups run after all tests, in TestMain.
var cleanups []func()

func unzipFile(f *zip.File, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	r, err := f.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, f.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func bootstrap(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the Lambda bootstrap; not with -short")
	}
	task, err := lambdaTask()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(task, "bootstrap")
}

// tool finds an executable the end-to-end tests need: in .bin/ of the
// repository, then on $PATH, then in /usr/bin. Missing, it fails the test
// with the command that installs it.
func tool(t *testing.T, name, install string) string {
	t.Helper()
	if root, err := testutil.RepoRoot(); err == nil {
		p := filepath.Join(root, ".bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/bin", name); fileExists(p) {
		return p
	}
	t.Fatalf("%s not found in .bin/, $PATH or /usr/bin; install it with: %s (or run make test, which does)", name, install)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// minioModel puts the tiny model in a new MinIO and returns the function's
// environment for it.
func minioModel(t *testing.T) map[string]string {
	t.Helper()
	m := testutil.NewMinIO(t)
	ctx := context.Background()
	model, err := os.ReadFile(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	createBucket(t, m, "models")
	if err := m.Put(ctx, "models", "tiny.gguf", model); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(model)
	env := s3Env(m)
	env["MODEL_URI"] = "s3://models/tiny.gguf"
	env["MODEL_SHA256"] = hex.EncodeToString(sum[:])
	env["THREADS"], env["CONTEXT_SIZE"], env["MAX_TOKENS"] = "1", "1024", "64"
	return env
}

// process runs a command until the test ends; its output is kept in out.
type process struct {
	cmd  *exec.Cmd
	out  *logBuffer
	done chan error
}

func start(t *testing.T, env map[string]string, name string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = filepath.Dir(name)
	// The zip's bootstrap finds llama.cpp in lib/ beside it, not through
	// $MEMLOAD_LLAMA_LIB; Lambda puts /var/task/lib on LD_LIBRARY_PATH
	// (libffi.so.8 is found there).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "MODEL_") &&
			!strings.HasPrefix(kv, "MEMLOAD_LLAMA_LIB=") && !strings.HasPrefix(kv, "LD_LIBRARY_PATH=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if task, err := lambdaTask(); err == nil {
		cmd.Env = append(cmd.Env, "LD_LIBRARY_PATH="+filepath.Join(task, "lib"))
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &process{cmd: cmd, out: &logBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), p.out.String())
		}
	})
	return p
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls until cond holds, failing the test after a minute.
func waitFor(t *testing.T, what string, p *process, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("waiting for %s: the process ended: %v", what, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after a minute", what)
		}
	}
}

// TestLambdaRIE runs the zip's bootstrap under the AWS Lambda Runtime
// Interface Emulator, loading the model from MinIO, and invokes it with
// Function URL events. The emulator takes the response-streaming invoke
// mode the function uses, but hands the client the whole response at the
// end, so this tests the stream's content and framing, not its timing.
func TestLambdaRIE(t *testing.T) {
	rie := tool(t, "aws-lambda-rie", "make rie")
	bin := bootstrap(t)
	env := minioModel(t)
	env["AWS_LAMBDA_FUNCTION_TIMEOUT"] = "120"
	env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = "2048"
	port := freePort(t)
	p := start(t, env, rie, "--runtime-interface-emulator-address", "127.0.0.1:"+port,
		"--runtime-api-address", "127.0.0.1:"+freePort(t), "--log-level", "error", bin)
	url := "http://127.0.0.1:" + port + "/2015-03-31/functions/function/invocations"

	invoke := func(method, path, body string, base64Body bool) (status int, headers map[string]string, payload string) {
		t.Helper()
		ev := events.LambdaFunctionURLRequest{
			Version: "2.0", RawPath: path,
			Headers: map[string]string{"content-type": "application/json", "host": "abcdefg.lambda-url.us-east-1.on.aws"},
			RequestContext: events.LambdaFunctionURLRequestContext{
				DomainName: "abcdefg.lambda-url.us-east-1.on.aws", RequestID: "req-1",
				HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: method, Path: path, Protocol: "HTTP/1.1", SourceIP: "127.0.0.1"},
			},
			Body: body, IsBase64Encoded: base64Body,
		}
		if base64Body {
			ev.Body = base64.StdEncoding.EncodeToString([]byte(body))
		}
		b, _ := json.Marshal(ev)
		var resp *http.Response
		waitFor(t, "emulator", p, func() bool {
			var err error
			resp, err = http.Post(url, "application/json", bytes.NewReader(b))
			return err == nil
		})
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		// A streamed Function URL response: a JSON prelude, eight NUL
		// bytes, then the body.
		prelude, rest, ok := bytes.Cut(raw, make([]byte, 8))
		if resp.StatusCode != http.StatusOK || !ok {
			t.Fatalf("invoke %s %s: %s %q", method, path, resp.Status, raw)
		}
		var pre struct {
			StatusCode int               `json:"statusCode"`
			Headers    map[string]string `json:"headers"`
		}
		if err := json.Unmarshal(prelude, &pre); err != nil {
			t.Fatalf("prelude %q: %v", prelude, err)
		}
		return pre.StatusCode, pre.Headers, string(rest)
	}

	status, _, body := invoke("GET", "/healthz", "", false)
	var h healthAnswer
	if err := json.Unmarshal([]byte(body), &h); err != nil || status != 200 || h.Status != "ready" {
		t.Fatalf("healthz: %d %s %v", status, body, err)
	}
	if c := h.ColdStart; !c.LoadedInit || !strings.Contains(c.Verified, "SHA-256") || c.Threads != 1 {
		t.Errorf("cold start %+v, want a verified load within init", c)
	}

	ask := `"messages":[{"role":"user","content":"Hello"}],"temperature":0,"max_tokens":8`
	status, headers, body := invoke("POST", "/v1/chat/completions", `{`+ask+`}`, true)
	var full chatResponse
	if err := json.Unmarshal([]byte(body), &full); err != nil || status != 200 || headers["Content-Type"] != "application/json" {
		t.Fatalf("chat: %d %v %s %v", status, headers, body, err)
	}
	status, headers, body = invoke("POST", "/v1/chat/completions", `{"stream":true,`+ask+`}`, false)
	if status != 200 || headers["Content-Type"] != "text/event-stream" {
		t.Fatalf("streamed chat: %d %v %s", status, headers, body)
	}
	text, last, _ := streamed(t, readSSE(t, strings.NewReader(body)))
	if text != string(full.Choices[0].Message.Content) || last.Timings.PredictedN != 8 {
		t.Errorf("streamed %q, answer %q", text, full.Choices[0].Message.Content)
	}
	status, _, body = invoke("POST", "/v1/chat/completions", `{"messages":"hi"}`, false)
	if status != 400 || !strings.Contains(body, "field messages must be") {
		t.Errorf("bad request: %d %s", status, body)
	}

	// The function's JSON logs: the cold start and each answer's speeds.
	waitFor(t, "chat log lines", p, func() bool { return len(p.out.find("chat")) == 2 })
	cold := p.out.find("cold start")
	if len(cold) != 1 {
		t.Fatalf("%d cold start log lines", len(cold))
	}
	for _, k := range []string{"download_ms", "verify_ms", "llama_load_ms", "total_ms"} {
		if _, ok := cold[0][k].(float64); !ok {
			t.Errorf("cold start log line lacks %s: %v", k, cold[0])
		}
	}
	for _, k := range []string{"link_mib_s", "ready_after_last_byte_ms"} {
		if v, ok := cold[0][k].(float64); !ok || v <= 0 {
			t.Errorf("cold start log line has %s %v, want a positive figure: %v", k, cold[0][k], cold[0])
		}
	}
	t.Logf("cold start: %v", cold[0])
	t.Logf("answer: %v", p.out.find("chat")[1])
}

// waitServing waits until the bootstrap p, started with -addr, has said
// where it listens and has its model loaded, and returns its base URL.
func waitServing(t *testing.T, p *process) string {
	t.Helper()
	var base string
	waitFor(t, "listening line", p, func() bool {
		_, after, ok := strings.Cut(p.out.String(), "msg=listening url=")
		base, _, _ = strings.Cut(after, " ")
		return ok
	})
	waitFor(t, "a loaded model", p, func() bool {
		resp, err := http.Get(base + "healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return base
}

// TestLocalProcess runs the same bootstrap outside Lambda: it listens on
// 127.0.0.1, and a plain HTTP client streams an answer.
func TestLocalProcess(t *testing.T) {
	bin := bootstrap(t)
	p := start(t, minioModel(t), bin, "-addr", "127.0.0.1:0")
	base := waitServing(t, p)

	// Greedy, so the answer runs to max_tokens rather than ending its turn
	// early by chance.
	resp := post(t, context.Background(), base, `{"stream":true,"messages":[{"role":"user","content":"Hello"}],"temperature":0,"max_tokens":16}`)
	if resp.StatusCode != http.StatusOK || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("%s, transfer encoding %v: want a chunked stream", resp.Status, resp.TransferEncoding)
	}
	text, last, _ := streamed(t, readSSE(t, resp.Body))
	resp.Body.Close()
	if text == "" || *last.Choices[0].FinishReason != "length" {
		t.Errorf("answer %q, %+v", text, last)
	}

	// Interrupted, it shuts down cleanly.
	p.cmd.Process.Signal(syscall.SIGINT)
	if err := <-p.done; err != nil {
		t.Errorf("exit after SIGINT: %v", err)
	}
	p.done <- nil
}

// TestLlamaRefusal gives the bootstrap a GGUF that passes the Go header
// check but that llama.cpp refuses by throwing a C++ exception. The
// exception must unwind through the statically linked libgcc (and the
// executable's own _dl_find_object) to llama.cpp's handler: the process
// stays up and reports the error.
func TestLlamaRefusal(t *testing.T) {
	bin := bootstrap(t)
	good, err := os.ReadFile(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "qwen9.gguf")
	if err := os.WriteFile(bad, bytes.Replace(good, []byte("qwen2"), []byte("qwen9"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, map[string]string{"MODEL_URI": bad}, bin, "-addr", "127.0.0.1:0")
	waitFor(t, "the load's failure", p, func() bool { return strings.Contains(p.out.String(), "model load failed") })
	out := p.out.String()
	if !strings.Contains(out, "llama.cpp could not load") {
		t.Errorf("output lacks llama.cpp's refusal:\n%s", out)
	}
	_, after, _ := strings.Cut(out, "msg=listening url=")
	base, _, _ := strings.Cut(after, " ")
	resp := post(t, context.Background(), base, `{"messages":[{"role":"user","content":"Hi"}]}`)
	defer resp.Body.Close()
	e := decode[struct{ Error apiError }](t, resp.Body)
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(e.Error.Message, "could not be loaded") {
		t.Errorf("%s %+v", resp.Status, e)
	}
}
