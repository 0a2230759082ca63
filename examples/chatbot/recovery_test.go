package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLoadRetriesThenExit: a load that keeps failing is tried LOAD_ATTEMPTS
// times with doubling waits; the request that waited for it hears why,
// with x-should-retry: false, and then the process exits (under Lambda,
// where main runs exitWhenLoadFails), so that Lambda starts afresh.
func TestLoadRetriesThenExit(t *testing.T) {
	// A model that is not there (yet): a failure that might heal. An
	// invalid model is not retried (TestInvalidModelNotRetried).
	missing := filepath.Join(t.TempDir(), "missing.gguf")
	ts := newTestServer(t, testConfig(t, map[string]string{"MODEL_URI": missing, "LOAD_ATTEMPTS": "3", "LOAD_BACKOFF": "150ms"}))
	exited := make(chan int, 1)
	var answered atomic.Bool
	go exitWhenLoadFails(ts.load, ts.server, ts.log, func(code int) {
		if !answered.Load() {
			t.Error("exit before the waiting request was answered")
		}
		exited <- code
	})

	resp := post(t, context.Background(), ts.url, `{"messages":[{"role":"user","content":"Hi"}]}`)
	e := decode[struct{ Error apiError }](t, resp.Body)
	resp.Body.Close()
	answered.Store(true)
	if resp.StatusCode != 500 || e.Error.Code != "model_load_failed" || !strings.Contains(e.Error.Message, "no such file") ||
		resp.Header.Get("X-Should-Retry") != "false" {
		t.Errorf("%s %+v, x-should-retry %q", resp.Status, e.Error, resp.Header.Get("X-Should-Retry"))
	}
	select {
	case code := <-exited:
		if code != 1 {
			t.Errorf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after the load failed")
	}

	retries := ts.logs.find("model load failed; retrying")
	if len(retries) != 2 || retries[0]["retry_in"] != "150ms" || retries[1]["retry_in"] != "300ms" || retries[1]["attempt"] != 2.0 {
		t.Errorf("retry log lines %v: want two, waiting 150ms then 300ms", retries)
	}
	if f := ts.logs.find("model load failed"); len(f) != 1 || f[0]["attempts"] != 3.0 || f[0]["level"] != "ERROR" {
		t.Errorf("final failure %v", f)
	}
	if x := ts.logs.find("exiting: the model could not be loaded, so that Lambda starts a fresh environment"); len(x) != 1 {
		t.Errorf("no exit log line")
	}
	if ts.load.cold.Attempts != 3 {
		t.Errorf("attempts %d", ts.load.cold.Attempts)
	}
}

// TestLoadRetryHeals: the model appears after the first attempt; the
// second one loads it, and the function stays.
func TestLoadRetryHeals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later.gguf")
	ts := newTestServer(t, testConfig(t, map[string]string{"MODEL_URI": path, "LOAD_ATTEMPTS": "3", "LOAD_BACKOFF": "200ms"}))
	exited := make(chan int, 1)
	go exitWhenLoadFails(ts.load, ts.server, ts.log, func(code int) { exited <- code })
	for deadline := time.Now().Add(5 * time.Second); len(ts.logs.find("model load failed; retrying")) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no retry")
		}
	}
	if err := os.Symlink(tinyModel, path); err != nil {
		t.Fatal(err)
	}
	resp := post(t, context.Background(), ts.url, `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}`)
	resp.Body.Close()
	if resp.StatusCode != 200 || ts.load.cold.Attempts != 2 {
		t.Errorf("%s after %d attempts", resp.Status, ts.load.cold.Attempts)
	}
	select {
	case <-exited:
		t.Error("exited after a load that succeeded")
	case <-time.After(100 * time.Millisecond):
	}
}

// TestLambdaInitFails runs the bootstrap as Lambda does (with
// AWS_LAMBDA_RUNTIME_API set; nothing listens there, since the process
// must end before it asks for an event): a model that keeps failing to
// load within the init phase, and an AUTH_TYPE=NONE without a key, end the
// process with an error.
func TestLambdaInitFails(t *testing.T) {
	bin := bootstrap(t)
	notModel := filepath.Join(t.TempDir(), "notes.gguf")
	if err := os.WriteFile(notModel, []byte("not a model at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.gguf")
	runtimeAPI := "127.0.0.1:" + freePort(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"load fails", map[string]string{"MODEL_URI": missing, "LOAD_ATTEMPTS": "3", "LOAD_BACKOFF": "10ms"},
			[]string{`"msg":"model load failed; retrying","uri":"` + missing + `","attempt":1`, `"attempt":2`, `"msg":"model load failed"`, "chatbot: loading " + missing}},
		{"open by accident", map[string]string{"MODEL_URI": notModel, "AUTH_TYPE": "NONE"},
			[]string{"chatbot: AUTH_TYPE=NONE without an API key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"AWS_LAMBDA_RUNTIME_API": runtimeAPI}
			for k, v := range tc.env {
				env[k] = v
			}
			out := initFails(t, bin, env)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestQuietCancel: llama.cpp's errors while a generation is cancelled are
// logged at Debug; the rest keep their level.
func TestQuietCancel(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		logs := &logBuffer{}
		var active atomic.Int32
		log := slog.New(&quietCancel{Handler: slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}), active: &active})
		log.Error("llama.cpp: decode: failed to decode, ret = 2")
		active.Add(1)
		log.Error("llama.cpp: graph_compute: ggml_backend_sched_graph_compute_async failed with error -1")
		log.Error("model load failed")
		log.With("a", 1).Error("llama.cpp: another")
		active.Add(-1)
		log.Error("llama.cpp: after")
		var got []string
		for line := range strings.Lines(logs.String()) {
			_, rest, _ := strings.Cut(line, `"level":"`)
			lvl, rest, _ := strings.Cut(rest, `"`)
			_, msg, _ := strings.Cut(rest, `"msg":"`)
			msg, _, _ = strings.Cut(msg, ` `)
			got = append(got, lvl+" "+msg)
		}
		want := "ERROR llama.cpp:,ERROR model,ERROR llama.cpp:"
		if level == slog.LevelDebug {
			want = "ERROR llama.cpp:,DEBUG llama.cpp:,ERROR model,DEBUG llama.cpp:,ERROR llama.cpp:"
		}
		if strings.Join(got, ",") != want {
			t.Errorf("at %v: %q, want %q", level, got, want)
		}
	}
}

// initFails runs bin as Lambda runs the bootstrap, with env, waits for the
// init to end, checks that the process exited with status 1, as a failed
// init must, and returns what it wrote.
func initFails(t *testing.T, bin string, env map[string]string) string {
	t.Helper()
	p := start(t, env, bin)
	var err error
	select {
	case err = <-p.done:
		p.done <- err
	case <-time.After(time.Minute):
		t.Fatal("the bootstrap is still running")
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1", err)
	}
	return p.out.String()
}
