package lambdart

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdaurl"

	"github.com/memload/memload/snapstart"
)

// The test binary is also the functions these tests run: started by
// Start with LAMBDART_TEST_FUNCTION set, it becomes that function, a real
// aws-lambda-go runtime client (the chatbot's) talking to the stand-in.
func TestMain(m *testing.M) {
	if name := os.Getenv("LAMBDART_TEST_FUNCTION"); name != "" {
		runFunction(name)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runFunction(name string) {
	dir := os.Getenv("TEST_DIR")
	switch name {
	case "echo":
		// Shows the event it got, with a status, a header and a cookie.
		lambdaurl.Start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ev, _ := lambdaurl.RequestFromContext(r.Context())
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Env", os.Getenv("AWS_LAMBDA_INITIALIZATION_TYPE")+" "+os.Getenv("LAMBDA_TASK_ROOT"))
			http.SetCookie(w, &http.Cookie{Name: "c", Value: "1"})
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(map[string]any{"event": ev, "body": string(body), "url": r.URL.String()})
		}))
	case "lockstep":
		// Writes chunk i, then waits until the test has read it: a
		// runtime that buffered the response would never get chunk 2.
		lambdaurl.Start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for i := range 5 {
				fmt.Fprintf(w, "chunk %d\n", i)
				for !exists(filepath.Join(dir, fmt.Sprint("ack-", i))) {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}))
	case "initerror":
		// Reports an init error through the Runtime API, then exits.
		http.Post("http://"+os.Getenv("AWS_LAMBDA_RUNTIME_API")+"/2018-06-01/runtime/init/error", "application/json",
			strings.NewReader(`{"errorMessage":"no model","errorType":"Chatbot.ModelError"}`))
		os.Exit(1)
	case "exit":
		os.Exit(2)
	case "longinit":
		// An init longer than an on-demand one may be: 11 s.
		time.Sleep(11 * time.Second)
		var h snapstart.Hooks
		if err := h.Checkpoint(context.Background()); err != nil {
			os.Exit(1)
		}
		lambdaurl.Start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ready") }))
	case "snapstart", "restorefail":
		// The SnapStart lifecycle through memload's snapstart package:
		// credentials are read after the restore.
		var creds string
		var h snapstart.Hooks
		h.BeforeSnapshot(func(context.Context) error { fmt.Println("before snapshot"); return nil })
		h.AfterRestore(func(context.Context) error {
			os.WriteFile(filepath.Join(dir, "restored"), nil, 0o644)
			if name == "restorefail" {
				return errors.New("no credentials")
			}
			req, _ := http.NewRequest("GET", os.Getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI"), nil)
			req.Header.Set("Authorization", os.Getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var c struct{ AccessKeyId string }
			json.NewDecoder(resp.Body).Decode(&c)
			creds = c.AccessKeyId
			return nil
		})
		if err := h.Checkpoint(context.Background()); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		lambdaurl.Start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, os.Getenv("AWS_LAMBDA_INITIALIZATION_TYPE"), " ", creds)
		}))
	case "slowinit":
		// The first start takes longer than the init phase allows.
		if marker := filepath.Join(dir, "started"); !exists(marker) {
			os.WriteFile(marker, nil, 0o644)
			time.Sleep(time.Minute)
		}
		lambdaurl.Start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ready") }))
	case "midstream":
		// Fails after part of the body: aws-lambda-go reports it in the
		// response's trailers.
		lambda.Start(func(ctx context.Context, _ *events.LambdaFunctionURLRequest) (*events.LambdaFunctionURLStreamingResponse, error) {
			return &events.LambdaFunctionURLStreamingResponse{StatusCode: 200,
				Body: io.MultiReader(strings.NewReader("partial"), errReader{})}, nil
		})
	case "big":
		lambdaurl.Start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := bytes.Repeat([]byte("x"), 32<<10)
			for range 24 {
				w.Write(chunk)
			}
		}))
	case "slow":
		lambdaurl.Start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "started")
			time.Sleep(time.Minute)
		}))
	case "background":
		// Counts in the background; frozen between invocations, the count
		// stands still.
		var n atomic.Int64
		go func() {
			for {
				time.Sleep(10 * time.Millisecond)
				n.Add(1)
			}
		}()
		lambdaurl.Start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, n.Load()) }))
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("the model crashed") }

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// start runs this test binary as the function name.
func start(t *testing.T, name string, optFns ...func(*Options)) (*Function, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f, err := Start(exe, append([]func(*Options){func(o *Options) {
		o.Env = map[string]string{"LAMBDART_TEST_FUNCTION": name, "TEST_DIR": dir}
		o.Timeout = 20 * time.Second
	}}, optFns...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			t.Logf("output:\n%s", f.Output())
		}
	})
	return f, dir
}

// reports waits for at least n reports: an invocation's comes once the
// runtime has finished its response, which can be after the client has
// read it all.
func reports(t *testing.T, f *Function, n int) []Report {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(f.Reports()) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d reports, want %d: %+v", len(f.Reports()), n, f.Reports())
		}
	}
	return f.Reports()
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestEvent(t *testing.T) {
	f, _ := start(t, "echo")
	req, _ := http.NewRequest("POST", f.URL()+"v1/chat?a=1&b=2", strings.NewReader(`{"q":1}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cookie", "k=v; l=w")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Event events.LambdaFunctionURLRequest
		Body  string
		URL   string
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	ev := got.Event
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Set-Cookie") != "c=1" {
		t.Errorf("response %s %v", resp.Status, resp.Header)
	}
	if ev.Version != "2.0" || ev.RawPath != "/v1/chat" || ev.RawQueryString != "a=1&b=2" || ev.QueryStringParameters["b"] != "2" ||
		ev.RequestContext.HTTP.Method != "POST" || ev.IsBase64Encoded || got.Body != `{"q":1}` ||
		strings.Join(ev.Cookies, ";") != "k=v;l=w" || ev.Headers["content-type"] != "application/json" ||
		!strings.HasSuffix(ev.RequestContext.DomainName, ".lambda-url.us-east-1.on.aws") {
		t.Errorf("event %+v, body %q", ev, got.Body)
	}
	exe, _ := os.Executable()
	if h := resp.Header.Get("X-Env"); h != "on-demand "+filepath.Dir(exe) {
		t.Errorf("environment: %q", h)
	}

	// Binary bodies arrive base64-encoded, and lambdaurl decodes them.
	resp, err = http.Post(f.URL(), "application/octet-stream", bytes.NewReader([]byte{0, 1, 2}))
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&got)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !got.Event.IsBase64Encoded || got.Body != "\x00\x01\x02" {
		t.Errorf("binary body: %+v %q", got.Event, got.Body)
	}
	r := reports(t, f, 3)
	if len(r) != 3 || !r[0].Init || r[0].Status != "success" || r[1].Status != "success" || r[1].ResponseMode != "" {
		t.Errorf("reports %+v", r)
	}
}

// TestStreaming shows the response reaching the client chunk by chunk:
// the function writes the next chunk only once the client has read the
// previous one.
func TestStreaming(t *testing.T) {
	f, dir := start(t, "lockstep")
	resp, err := http.Get(f.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 5 {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("chunk %d\n", i) {
			t.Fatalf("chunk %d: %q %v", i, line, err)
		}
		os.WriteFile(filepath.Join(dir, fmt.Sprint("ack-", i)), nil, 0o644)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after the chunks: %q %v", rest, err)
	}
	r := reports(t, f, 2)
	if last := r[len(r)-1]; last.Status != "success" || last.Chunks < 5 {
		t.Errorf("report %+v", last)
	}
}

func TestInitError(t *testing.T) {
	for _, c := range []struct{ name, errorType string }{
		{"initerror", "Chatbot.ModelError"},
		{"exit", "Runtime.ExitError"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, _ := start(t, c.name)
			resp, body := get(t, f.URL())
			if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "Internal Server Error") {
				t.Errorf("%s %s", resp.Status, body)
			}
			// The init failed, was retried within the invocation, and
			// failed again.
			r := reports(t, f, 3)
			if len(r) != 3 || r[0].Phase != "init" || r[0].ErrorType != c.errorType || r[1].Phase != "invoke" || !r[1].Init ||
				r[1].ErrorType != c.errorType || r[2].Init || r[2].Status != "error" || f.Starts() != 2 {
				t.Errorf("reports %+v, %d starts", r, f.Starts())
			}
			if !strings.Contains(f.Output(), "INIT_REPORT Init Duration") {
				t.Errorf("no INIT_REPORT line")
			}
		})
	}
}

// TestInitTimeout: an init cut at the limit is retried within the first
// invocation, which then has the function's timeout.
func TestInitTimeout(t *testing.T) {
	f, _ := start(t, "slowinit", func(o *Options) { o.InitTimeout = 500 * time.Millisecond })
	resp, body := get(t, f.URL())
	if resp.StatusCode != http.StatusOK || body != "ready" {
		t.Errorf("%s %q", resp.Status, body)
	}
	r := reports(t, f, 3)
	if len(r) != 3 || r[0].Status != "timeout" || r[0].Phase != "init" || r[1].Status != "success" || r[1].Phase != "invoke" ||
		r[2].Status != "success" || f.Starts() != 2 {
		t.Errorf("reports %+v, %d starts", r, f.Starts())
	}
}

// TestProvisioned: a provisioned environment initialises before any
// request, with more than 10 s if it needs them.
func TestProvisioned(t *testing.T) {
	f, _ := start(t, "echo", func(o *Options) { o.Provisioned = true })
	for deadline := time.Now().Add(10 * time.Second); len(f.Reports()) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no init report")
		}
	}
	if r := f.Reports()[0]; !r.Init || r.Status != "success" {
		t.Errorf("init %+v", r)
	}
	resp, _ := get(t, f.URL())
	if resp.Header.Get("X-Env") == "" || !strings.HasPrefix(resp.Header.Get("X-Env"), "provisioned-concurrency ") {
		t.Errorf("X-Env %q", resp.Header.Get("X-Env"))
	}
	if f.Starts() != 1 {
		t.Errorf("%d starts", f.Starts())
	}
}

// TestMidStreamError: an error after the body started reaches the
// runtime in the trailers; the client sees the stream break off.
func TestMidStreamError(t *testing.T) {
	f, _ := start(t, "midstream")
	resp, err := http.Get(f.URL())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "partial" || err == nil {
		t.Errorf("%s %q %v: want the partial body, then an error", resp.Status, b, err)
	}
	r := reports(t, f, 2)
	if last := r[len(r)-1]; last.Status != "error" || last.ErrorType != "errors.errorString" && last.ErrorType == "" {
		t.Errorf("report %+v", last)
	}
	if !strings.Contains(f.Output(), "the model crashed") {
		t.Errorf("the trailer's error body is not logged")
	}
}

// TestBandwidth: past the uncapped bytes, the response is paced.
func TestBandwidth(t *testing.T) {
	f, _ := start(t, "big", func(o *Options) { o.UncappedBytes, o.BytesPerSecond = 256<<10, 1<<20 })
	t0 := time.Now()
	_, body := get(t, f.URL())
	d := time.Since(t0)
	// 768 KiB, of which 512 KiB at 1 MiB/s: at least half a second.
	if len(body) != 768<<10 || d < 500*time.Millisecond {
		t.Errorf("%d bytes in %v", len(body), d)
	}
	t.Logf("768 KiB with 256 KiB uncapped at 1 MiB/s: %v", d)

	f, _ = start(t, "big", func(o *Options) { o.MaxResponseBytes = 100 << 10 })
	resp, err := http.Get(f.URL())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || len(b) > 100<<10 {
		t.Errorf("over the limit: %d bytes, %v", len(b), err)
	}
}

func TestTimeout(t *testing.T) {
	f, _ := start(t, "slow", func(o *Options) { o.Timeout = time.Second })
	resp, err := http.Get(f.URL())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "started" || err == nil {
		t.Errorf("%q %v: want the start, then a broken stream", b, err)
	}
	r := reports(t, f, 2)
	if last := r[len(r)-1]; last.Status != "timeout" {
		t.Errorf("reports %+v", r)
	}
	// The next request gets a new environment.
	get(t, f.URL())
	if f.Starts() != 2 {
		t.Errorf("%d starts after a timeout", f.Starts())
	}
}

// TestFreeze: between invocations the environment is stopped, so its
// background work does not advance.
func TestFreeze(t *testing.T) {
	f, _ := start(t, "background")
	_, a := get(t, f.URL())
	for deadline := time.Now().Add(5 * time.Second); !f.Frozen(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not frozen after the invocation")
		}
	}
	time.Sleep(300 * time.Millisecond) // 30 ticks if it ran
	_, b := get(t, f.URL())
	var na, nb int
	fmt.Sscan(a, &na)
	fmt.Sscan(b, &nb)
	if nb-na > 10 {
		t.Errorf("the count went from %d to %d while frozen", na, nb)
	}

	// With NoFreeze it runs on.
	f, _ = start(t, "background", func(o *Options) { o.NoFreeze = true })
	_, a = get(t, f.URL())
	time.Sleep(300 * time.Millisecond)
	_, b = get(t, f.URL())
	fmt.Sscan(a, &na)
	fmt.Sscan(b, &nb)
	if nb-na < 10 {
		t.Errorf("the count went from %d to %d unfrozen", na, nb)
	}
}

func TestBusy(t *testing.T) {
	f, _ := start(t, "slow", func(o *Options) { o.Timeout = 2 * time.Second })
	resp, err := http.Get(f.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r2, body := get(t, f.URL())
	if r2.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a second request while busy: %s %s", r2.Status, body)
	}
}

// TestSnapStart runs a function through SnapStart's lifecycle: the init
// ends at restore/next, where the process is frozen; the first request
// restores it, and its after-restore hook reads the container credentials.
func TestSnapStart(t *testing.T) {
	f, dir := start(t, "snapstart", func(o *Options) {
		o.SnapStart = true
		o.Credentials = &Credentials{AccessKeyID: "AKIDSNAP", SecretAccessKey: "secret"}
	})
	out, err := f.Snapshot(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "before snapshot") || !f.Frozen() || exists(filepath.Join(dir, "restored")) {
		t.Fatalf("at the snapshot: output %q, frozen %v, restored %v: want the before hook run, frozen, not restored",
			out, f.Frozen(), exists(filepath.Join(dir, "restored")))
	}
	if r := reports(t, f, 1)[0]; !r.Init || r.Phase != "init" || r.Status != "success" {
		t.Errorf("init %+v", r)
	}
	for i := range 2 {
		resp, body := get(t, f.URL())
		if resp.StatusCode != http.StatusOK || body != "snap-start AKIDSNAP" {
			t.Fatalf("request %d: %s %q, want the init type and the credentials read after the restore", i, resp.Status, body)
		}
	}
	r := reports(t, f, 4)
	if r[1].Phase != "restore" || r[1].Status != "success" || r[2].Phase != "invoke" || r[3].Phase != "invoke" {
		t.Errorf("reports %+v: want init, restore, two invocations", r)
	}
	if f.CredentialRequests() != 1 || f.Starts() != 1 || !strings.Contains(f.Output(), "RESTORE_REPORT") {
		t.Errorf("%d credential requests, %d starts: want 1 and 1 and a RESTORE_REPORT", f.CredentialRequests(), f.Starts())
	}
}

// TestSnapStartRestoreError: a failed after-restore hook reaches
// restore/error; the environment is gone and the function does not serve.
func TestSnapStartRestoreError(t *testing.T) {
	f, dir := start(t, "restorefail", func(o *Options) { o.SnapStart = true })
	if _, err := f.Snapshot(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if resp, body := get(t, f.URL()); resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("request %d: %s %q, want 502", i, resp.Status, body)
		}
	}
	r := reports(t, f, 2)
	if r[1].Phase != "restore" || r[1].Status != "error" || r[1].ErrorType != "Runtime.AfterRestoreError" || !exists(filepath.Join(dir, "restored")) {
		t.Errorf("reports %+v: want the restore failed with Runtime.AfterRestoreError", r)
	}
	if f.Starts() != 1 {
		t.Errorf("%d starts: a SnapStart function is restored, not started again", f.Starts())
	}
}

// TestSnapStartWithoutHooks: a runtime that never calls restore/next is
// snapshotted at its first /next, as an image labelled to allow SnapStart.
func TestSnapStartWithoutHooks(t *testing.T) {
	f, _ := start(t, "echo", func(o *Options) { o.SnapStart = true })
	if _, err := f.Snapshot(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	resp, _ := get(t, f.URL())
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(resp.Header.Get("X-Env"), "snap-start ") {
		t.Errorf("%s, X-Env %q", resp.Status, resp.Header.Get("X-Env"))
	}
}

// TestSnapStartInitLimit: a SnapStart init may outlast the 10 s of an
// on-demand one (the function's timeout, at least 130 s).
func TestSnapStartInitLimit(t *testing.T) {
	f, _ := start(t, "longinit", func(o *Options) { o.SnapStart = true })
	if _, err := f.Snapshot(time.Minute); err != nil {
		t.Fatal(err)
	}
	if r := reports(t, f, 1)[0]; r.Status != "success" || r.Duration < 11*time.Second {
		t.Errorf("init %+v: want an 11 s init that succeeds", r)
	}
	if resp, body := get(t, f.URL()); resp.StatusCode != http.StatusOK || body != "ready" {
		t.Errorf("%s %q", resp.Status, body)
	}
}
