package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
)

// TestSnapStartDemo runs -snapstart with the tiny model: the real chatbot
// under lambdart, with MinIO. Its steps must come in order: the init's
// load, the snapshot point, the request that restores it, the restore.
func TestSnapStartDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the chatbot; not with -short")
	}
	root, err := testutil.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(llm.LibraryEnv) == "" {
		platform := map[string]string{"amd64": "linux-x64", "arm64": "linux-arm64"}[runtime.GOARCH]
		t.Setenv(llm.LibraryEnv, filepath.Join(root, ".bin", "llama", platform))
	}
	bin := filepath.Join(t.TempDir(), "chatbot")
	build := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", bin, "./examples/chatbot")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	m := testutil.NewMinIO(t)
	model := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := testutil.WriteModel(model, testutil.TinyConfig("qwen2")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sum, _, err := upload(ctx, m, "models", "tiny.gguf", model)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w := &lockedWriter{w: &out}
	err = snapStart(ctx, snapStartRun{chatbot: bin, minio: m, endpoint: m.Endpoint, uri: "s3://models/tiny.gguf", sum: sum,
		ask: "Hello", tokens: 8, exit: true, out: w})
	s := w.String()
	t.Logf("output:\n%s", s)
	if err != nil {
		t.Fatal(err)
	}
	last := -1
	for _, want := range []string{"init (AWS_LAMBDA_INITIALIZATION_TYPE=snap-start)", `function | {"time"`, `"msg":"cold start"`,
		"warmed up", "snapshot point", "a request comes", "RESTORE_REPORT", "restore phase:"} {
		i := strings.Index(s, want)
		if i < 0 || i < last {
			t.Fatalf("%q missing or out of order", want)
		}
		last = i
	}
	if strings.Count(s, `"msg":"cold start"`) != 1 {
		t.Errorf("want one load, in the init")
	}
}

// lockedWriter is a bytes.Buffer for several writers: the demo and the
// function's output.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
