package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/internal/testutil/lambdart"
)

// connCounter forwards TCP connections to addr and counts those open.
type connCounter struct {
	ln         net.Listener
	open, seen atomic.Int64
}

func newConnCounter(t *testing.T, addr string) *connCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &connCounter{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			c.open.Add(1)
			c.seen.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.open.Add(-1)
				defer in.Close()
				out, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer out.Close()
				done := make(chan struct{})
				go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite(); close(done) }()
				io.Copy(in, out)
				in.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	return c
}

// keyStore stands in for SSM Parameter Store (nothing real can run here)
// for the API key: GetParameter answers the current key, or fails.
type keyStore struct {
	mu    sync.Mutex
	key   string
	fail  bool
	calls int
}

func (k *keyStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls++
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	if r.Header.Get("X-Amz-Target") != "AmazonSSM.GetParameter" || k.fail {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"__type":"ParameterNotFound","message":"no such parameter"}`)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"Parameter": map[string]any{"Name": "/chatbot/api-key", "Type": "SecureString", "Value": k.key, "Version": 1}})
}

func (k *keyStore) set(key string, fail bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.key, k.fail = key, fail
}

func (k *keyStore) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.calls
}

// snapSetup is a SnapStart function's world: the tiny model in MinIO
// behind a request-counting proxy and a connection counter, credentials
// served by the container credentials endpoint (not the environment), and
// the API key in a key store.
type snapSetup struct {
	env      map[string]string
	creds    *lambdart.Credentials
	s3Calls  *atomic.Int64
	s3Conns  *connCounter
	keys     *keyStore
	keyValue string
}

func newSnapSetup(t *testing.T, apiKey bool) *snapSetup {
	t.Helper()
	env := minioModel(t)
	s := &snapSetup{env: env, s3Calls: &atomic.Int64{}, keys: &keyStore{}}
	proxy := testutil.NewFaultProxy(t, env["AWS_ENDPOINT_URL_S3"], func(*http.Request) testutil.Injection {
		s.s3Calls.Add(1)
		return testutil.Injection{}
	})
	s.s3Conns = newConnCounter(t, strings.TrimPrefix(proxy.URL, "http://"))
	env["AWS_ENDPOINT_URL_S3"] = "http://" + s.s3Conns.ln.Addr().String()
	// Under SnapStart the role's credentials come from the container
	// credentials endpoint, not the access-key variables.
	s.creds = &lambdart.Credentials{AccessKeyID: env["AWS_ACCESS_KEY_ID"], SecretAccessKey: env["AWS_SECRET_ACCESS_KEY"]}
	delete(env, "AWS_ACCESS_KEY_ID")
	delete(env, "AWS_SECRET_ACCESS_KEY")
	env["MAX_TOKENS"] = "32"
	if apiKey {
		s.keyValue = "sk-snapshot-key-0123456789"
		s.keys.set(s.keyValue, false)
		srv := httptest.NewServer(s.keys)
		t.Cleanup(srv.Close)
		env["AUTH_TYPE"], env["API_KEY_PARAMETER"], env["AWS_ENDPOINT_URL_SSM"] = "NONE", "/chatbot/api-key", srv.URL
	}
	return s
}

func (s *snapSetup) start(t *testing.T, bin string) *lambdart.Function {
	t.Helper()
	return startFunction(t, bin, func(o *lambdart.Options) {
		o.Env, o.SnapStart, o.Credentials, o.Timeout = s.env, true, s.creds, 2*time.Minute
	})
}

// snapshot waits for f's snapshot and returns the log records by then.
func snapshot(t *testing.T, f *lambdart.Function) *logBuffer {
	t.Helper()
	out, err := f.Snapshot(5 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	b := &logBuffer{}
	b.Write([]byte(out))
	return b
}

// chatWith posts a chat request with an API key (none if empty) and
// returns the status and the answer's text.
func chatWith(t *testing.T, base, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, string(b)
	}
	var a chatResponse
	if err := json.Unmarshal(b, &a); err != nil || len(a.Choices) == 0 || a.Choices[0].Message == nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return resp.StatusCode, a.Choices[0].Message.Content
}

// TestSnapStart runs the zip's bootstrap as a SnapStart function under
// lambdart, with the model in MinIO: the init loads, repacks and warms up
// the whole model before restore/next; from then on nothing reaches S3;
// the restore reads the API key again (it rotated meanwhile) with fresh
// credentials, and the first request is answered from the snapshot's
// model, with no download and no llama.cpp load.
func TestSnapStart(t *testing.T) {
	bin := bootstrap(t)
	s := newSnapSetup(t, true)
	f := s.start(t, bin)
	logs := snapshot(t, f)

	cold := logs.find("cold start")
	if len(cold) != 1 || cold[0]["repack"] != true || !strings.Contains(fmt.Sprint(cold[0]["verified"]), "SHA-256") || len(logs.find("llm: loaded")) != 1 {
		t.Fatalf("cold start log lines before the snapshot %v: want one verified, repacked load", cold)
	}
	if len(logs.find("warmed up: one token generated before the snapshot")) != 1 || len(logs.find("snapstart: snapshot point: waiting for Lambda's restore")) != 1 {
		t.Fatalf("before the snapshot, want the warm-up and the snapshot point logged")
	}
	atSnapshot := s.s3Calls.Load()
	if atSnapshot == 0 {
		t.Fatal("no S3 request went through the proxy: the test does not see the load")
	}
	// Closed before the snapshot (the process is frozen now; the
	// counter sees each close once its copy ends).
	for deadline := time.Now().Add(5 * time.Second); s.s3Conns.open.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to S3 open at the snapshot: want the idle ones closed", s.s3Conns.open.Load())
		}
	}
	credsAtSnapshot, connsAtSnapshot := f.CredentialRequests(), s.s3Conns.seen.Load()
	if credsAtSnapshot == 0 || s.keys.count() != 1 {
		t.Fatalf("%d credential requests and %d key reads before the snapshot: want the container endpoint used and the key read once", credsAtSnapshot, s.keys.count())
	}

	// The key rotates while the snapshot waits.
	rotated := "sk-rotated-key-9876543210"
	s.keys.set(rotated, false)
	ask := `{"messages":[{"role":"user","content":"Hello"}],"temperature":0,"max_tokens":8}`
	if status, body := chatWith(t, f.URL(), s.keyValue, ask); status != http.StatusUnauthorized {
		t.Fatalf("the snapshot's key after the rotation: %d %s, want 401", status, body)
	}
	status, text := chatWith(t, f.URL(), rotated, ask)
	if status != http.StatusOK || text == "" {
		t.Fatalf("the rotated key: %d %q", status, text)
	}
	if s.keys.count() != 2 || f.CredentialRequests() <= credsAtSnapshot {
		t.Errorf("%d key reads, %d credential requests (%d at the snapshot): want the key read again after the restore with fresh credentials",
			s.keys.count(), f.CredentialRequests(), credsAtSnapshot)
	}
	if n, c := s.s3Calls.Load(), s.s3Conns.seen.Load(); n != atSnapshot || c != connsAtSnapshot {
		t.Errorf("S3: %d requests and %d connections after the restore began (%d and %d at the snapshot): want none", n, c, atSnapshot, connsAtSnapshot)
	}
	after := &logBuffer{}
	after.Write([]byte(strings.TrimPrefix(f.Output(), logs.String())))
	if len(after.find("cold start")) != 0 || len(after.find("s3load: loaded")) != 0 || len(after.find("llm: loaded")) != 0 || len(after.find("snapstart: restored")) != 1 {
		t.Errorf("after the snapshot the function logged:\n%s\nwant the restore and no load", after.String())
	}
	h := health(t, f)
	if h.Status != "ready" || h.ColdStart == nil || !h.ColdStart.LoadedInit {
		t.Errorf("healthz %+v", h)
	}
	r := f.Reports()
	if len(r) < 3 || r[0].Phase != "init" || r[0].Status != "success" || r[1].Phase != "restore" || r[1].Status != "success" || f.Starts() != 1 {
		t.Errorf("reports %+v, %d starts: want an init, a restore, invocations, one process", r, f.Starts())
	}
}

// TestSnapStartTwoRestores: two environments restored from snapshots of
// one function sample differently at temperature 1 with no seed, and
// alike with one. (Here each is its own process: CRIU cannot run here, so
// no two environments share one snapshot's memory; the default seed comes
// from crypto/rand, which the kernel keeps unique after a restore.)
func TestSnapStartTwoRestores(t *testing.T) {
	bin := bootstrap(t)
	s := newSnapSetup(t, false)
	fs := []*lambdart.Function{s.start(t, bin), s.start(t, bin)}
	for _, f := range fs {
		snapshot(t, f)
	}
	answers := func(fields string) [2]string {
		var out [2]string
		for i, f := range fs {
			status, text := chatWith(t, f.URL(), "", `{"messages":[{"role":"user","content":"Tell me a story"}],"temperature":1,"max_tokens":24`+fields+`}`)
			if status != http.StatusOK {
				t.Fatalf("%d %s", status, text)
			}
			out[i] = text
		}
		return out
	}
	if a := answers(""); a[0] == a[1] {
		t.Errorf("no seed: both environments answered %q", a[0])
	}
	if a := answers(`,"seed":42`); a[0] != a[1] {
		t.Errorf("seed 42: %q and %q", a[0], a[1])
	}
}

// TestSnapStartRestoreError: the API key cannot be read after the restore;
// the after-restore hook's error reaches restore/error, and the function
// never serves (open or otherwise).
func TestSnapStartRestoreError(t *testing.T) {
	bin := bootstrap(t)
	s := newSnapSetup(t, true)
	f := s.start(t, bin)
	snapshot(t, f)
	s.keys.set("", true)
	for i := range 2 {
		if status, body := chatWith(t, f.URL(), s.keyValue, `{"messages":[{"role":"user","content":"Hello"}],"max_tokens":4}`); status != http.StatusBadGateway {
			t.Fatalf("request %d: %d %s, want 502", i, status, body)
		}
	}
	r := f.Reports()
	if len(r) < 2 || r[1].Phase != "restore" || r[1].Status != "error" || r[1].ErrorType != "Runtime.AfterRestoreError" {
		t.Errorf("reports %+v: want the restore failed with Runtime.AfterRestoreError", r)
	}
	if !strings.Contains(f.Output(), "ParameterNotFound") {
		t.Errorf("the output does not say why the restore failed")
	}
}

// TestSnapStartZipPath: the same bootstrap under an on-demand init takes
// the zip's path: no warm-up, no snapshot.
func TestSnapStartZipPath(t *testing.T) {
	bin := bootstrap(t)
	f := startFunction(t, bin, func(o *lambdart.Options) { o.Env, o.Timeout = minioModel(t), 2*time.Minute })
	if h := health(t, f); h.Status != "ready" || h.ColdStart == nil || !h.ColdStart.LoadedInit {
		t.Fatalf("healthz %+v", h)
	}
	if out := f.Output(); strings.Contains(out, "snapstart") || strings.Contains(out, "warmed up") {
		t.Errorf("an on-demand init logged SnapStart steps:\n%s", out)
	}
	if r := f.Reports(); r[0].Phase != "init" || r[0].Status != "success" {
		t.Errorf("reports %+v", r)
	}
}
