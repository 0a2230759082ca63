package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/memload/memload/internal/testutil"
)

// damagedModel writes a model whose output norm is stored as F16, which
// llama.cpp v0.5.0's CPU backend cannot add or multiply: before the GGUF
// check, it aborted the process at the first chat.
func damagedModel(t *testing.T) string {
	t.Helper()
	cs, err := testutil.Corruptions(testutil.CorruptConfig("qwen2"), 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == "tensor-type/output_norm.weight=F16" {
			path := filepath.Join(t.TempDir(), "damaged.gguf")
			if err := os.WriteFile(path, c.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			return path
		}
	}
	t.Fatal("no such corruption")
	return ""
}

// TestInvalidModelNotRetried: an invalid model file does not heal, so it is
// loaded once, not LOAD_ATTEMPTS times; the log line and /healthz name the
// problem.
func TestInvalidModelNotRetried(t *testing.T) {
	ts := newTestServer(t, testConfig(t, map[string]string{"MODEL_URI": damagedModel(t), "LOAD_ATTEMPTS": "3", "LOAD_BACKOFF": "10ms"}))
	select {
	case <-ts.load.done:
	case <-time.After(time.Minute):
		t.Fatal("the load did not end")
	}
	if ts.load.cold.Attempts != 1 {
		t.Errorf("%d attempts, want 1", ts.load.cold.Attempts)
	}
	if r := ts.logs.find("model load failed; retrying"); len(r) != 0 {
		t.Errorf("retried: %v", r)
	}
	const why = `"output_norm.weight" (256) is F16`
	f := ts.logs.find("model load failed")
	if len(f) != 1 || f[0]["invalid_model"] != true || !strings.Contains(f[0]["err"].(string), why) {
		t.Errorf("log lines %v: want one naming the tensor", f)
	}
	resp, err := http.Get(ts.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	h := decode[healthAnswer](t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || h.Status != "failed" || h.ColdStart == nil || !strings.Contains(h.ColdStart.Error, why) {
		t.Errorf("healthz %d %+v: want the failure, naming the tensor", resp.StatusCode, h)
	}
}

// TestLambdaInitInvalidModel runs the bootstrap as Lambda does (see
// TestLambdaInitFails): an invalid model ends the init at the first
// attempt, with an error that names the problem, instead of crashing.
func TestLambdaInitInvalidModel(t *testing.T) {
	bin := bootstrap(t)
	out := initFails(t, bin, map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:" + freePort(t),
		"MODEL_URI": damagedModel(t), "LOAD_ATTEMPTS": "3", "LOAD_BACKOFF": "10ms"})
	if strings.Contains(out, "retrying") || !strings.Contains(out, `"msg":"model load failed"`) ||
		!strings.Contains(out, `\"output_norm.weight\" (256) is F16`) || !strings.Contains(out, `"invalid_model":true`) {
		t.Errorf("output: want one failed load naming the tensor:\n%s", out)
	}
}

// TestLambdaInitNoLibrary: llama.cpp's libraries missing do not come back
// on a retry either, so the init ends at the first attempt, saying what is
// missing and how to fix it.
func TestLambdaInitNoLibrary(t *testing.T) {
	bin := bootstrap(t)
	out := initFails(t, bin, map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:" + freePort(t),
		"MODEL_URI": testutil.TinyModel(t, "qwen2"), "LOAD_ATTEMPTS": "3", "LOAD_BACKOFF": "10ms",
		"MEMLOAD_LLAMA_LIB": t.TempDir()})
	if strings.Contains(out, "retrying") || !strings.Contains(out, `"msg":"model load failed"`) ||
		!strings.Contains(out, "llama.cpp libraries unusable") || !strings.Contains(out, "make llama") {
		t.Errorf("output: want one failed load naming the missing libraries and the fix:\n%s", out)
	}
}
