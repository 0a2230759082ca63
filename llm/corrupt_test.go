package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/memload/memload/internal/testutil"
)

// A model file must never take the process down. These tests load damaged
// models in child processes (this test binary, run again as
// TestCorruptChild), so that a crash inside llama.cpp fails the test
// instead of ending it.

const corruptChildEnv = "MEMLOAD_CORRUPT_CHILD"

var corruptRun = flag.String("corrupt.run", "", "TestCorruptModels: load only the corruptions whose names match this regexp")

// childResult is what a child reports on its last line of output.
type childResult struct {
	LoadErr string `json:"load_err,omitempty"`
	Invalid bool   `json:"invalid,omitempty"` // LoadErr matches ErrInvalidModel or ErrUnknownTemplate
	ChatErr string `json:"chat_err,omitempty"`
	Full    bool   `json:"full,omitempty"` // ChatErr matches ErrContextFull: the model's training context is tiny
	Answer  string `json:"answer,omitempty"`
}

const childResultPrefix = "corrupt-child-result: "

var crashLine = regexp.MustCompile(`GGML_ASSERT|GGML_ABORT|fatal|terminate|what\(\)|SIG[A-Z]+|panic:|error`)

// TestCorruptChild is the child: it loads the model named by
// $MEMLOAD_CORRUPT_CHILD, chats 4 greedy tokens and prints a childResult.
func TestCorruptChild(t *testing.T) {
	path := os.Getenv(corruptChildEnv)
	if path == "" {
		t.Skip("run by TestCorruptModels in a child process")
	}
	var r childResult
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, err := Load(context.Background(), path, func(o *Options) { o.Threads = 1; o.ContextSize = 256; o.Logger = logger })
	if err != nil {
		r.LoadErr = err.Error()
		r.Invalid = errors.Is(err, ErrInvalidModel) || errors.Is(err, ErrUnknownTemplate)
	} else {
		var b strings.Builder
		_, err := m.Chat(context.Background(), hello, func(s string) error { b.WriteString(s); return nil }, greedy(4))
		if err != nil {
			r.ChatErr = err.Error()
			r.Full = errors.Is(err, ErrContextFull)
		}
		r.Answer = b.String()
		m.Close()
	}
	j, _ := json.Marshal(r)
	fmt.Printf("\n%s%s\n", childResultPrefix, j)
}

// outcome is how a child ended, as the parent sees it.
type outcome struct {
	name   string
	kind   string // "refused", "loaded", "crash", "hang", "unclassified"
	detail string
}

// runChild loads the model at path in a child process.
func runChild(ctx context.Context, path string, timeout time.Duration) outcome {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCorruptChild$", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(), corruptChildEnv+"="+path, "GORACE=halt_on_error=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	tail := func() string {
		// ggml prints a gdb backtrace after the line that says why: keep
		// the lines that say why, then the end.
		s := strings.TrimSpace(errOut.String() + out.String())
		var why []string
		for line := range strings.Lines(s) {
			if crashLine.MatchString(line) && len(why) < 8 {
				why = append(why, strings.TrimSpace(line))
			}
		}
		if len(s) > 800 {
			s = "…" + s[len(s)-800:]
		}
		return strings.Join(why, " | ") + " || " + s
	}
	if ctx.Err() != nil {
		return outcome{kind: "hang", detail: fmt.Sprintf("no answer within %v", timeout)}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return outcome{kind: "crash", detail: fmt.Sprintf("%v: %s", ws.Signal(), tail())}
		}
	}
	i := strings.LastIndex(out.String(), childResultPrefix)
	if err != nil || i < 0 {
		return outcome{kind: "crash", detail: fmt.Sprintf("%v: %s", err, tail())}
	}
	var r childResult
	line, _, _ := strings.Cut(out.String()[i+len(childResultPrefix):], "\n")
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return outcome{kind: "crash", detail: "unreadable result: " + tail()}
	}
	switch {
	case r.LoadErr != "" && r.Invalid:
		return outcome{kind: "refused", detail: r.LoadErr}
	case r.LoadErr != "":
		return outcome{kind: "unclassified", detail: "load: " + r.LoadErr}
	case r.ChatErr != "" && r.Full:
		// A context_length too small for any prompt: the model loads
		// and says so with a sentinel at the first chat.
		return outcome{kind: "loaded", detail: "chat: " + r.ChatErr}
	case r.ChatErr != "":
		return outcome{kind: "unclassified", detail: "loaded, then chat: " + r.ChatErr}
	}
	return outcome{kind: "loaded", detail: fmt.Sprintf("answered %q", r.Answer)}
}

// runCorruptions loads each corruption in a child process, a few at a
// time, and returns the outcomes.
func runCorruptions(t *testing.T, cs []testutil.Corruption) []outcome {
	t.Helper()
	dir := t.TempDir()
	out := make([]outcome, len(cs))
	sem := make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))
	var wg sync.WaitGroup
	for i, c := range cs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			path := filepath.Join(dir, fmt.Sprintf("%d.gguf", i))
			if err := os.WriteFile(path, c.Bytes(), 0o644); err != nil {
				out[i] = outcome{name: c.Name, kind: "unclassified", detail: err.Error()}
				return
			}
			defer os.Remove(path)
			out[i] = runChild(context.Background(), path, 2*time.Minute)
			out[i].name = c.Name
		}()
	}
	wg.Wait()
	return out
}

// TestCorruptModels loads hundreds of damaged models, each in a child
// process, and fails on any crash, hang or error that matches no
// sentinel. A damaged model that loads must also answer.
func TestCorruptModels(t *testing.T) {
	if testing.Short() {
		t.Skip("loads hundreds of models in child processes")
	}
	for _, arch := range []string{"qwen2", "llama"} {
		t.Run(arch, func(t *testing.T) {
			cs, err := testutil.Corruptions(testutil.CorruptConfig(arch), 1)
			if err != nil {
				t.Fatal(err)
			}
			if *corruptRun != "" {
				re := regexp.MustCompile(*corruptRun)
				cs = slices.DeleteFunc(cs, func(c testutil.Corruption) bool { return !re.MatchString(c.Name) })
			}
			if arch != "qwen2" {
				// The other architecture: what differs between them.
				cs = filterCorruptions(cs, "hparam/", "tensors/", "tensor-type/", "vocab/model=")
			}
			counts := map[string]int{}
			for _, o := range runCorruptions(t, cs) {
				counts[o.kind]++
				switch o.kind {
				case "crash", "hang", "unclassified":
					t.Errorf("%s: %s: %s", o.name, o.kind, o.detail)
				default:
					if testing.Verbose() {
						t.Logf("%s: %s: %s", o.name, o.kind, o.detail)
					}
				}
			}
			t.Logf("%d damaged models: %v", len(cs), counts)
		})
	}
}

func filterCorruptions(cs []testutil.Corruption, prefixes ...string) []testutil.Corruption {
	var out []testutil.Corruption
	for _, c := range cs {
		for _, p := range prefixes {
			if strings.HasPrefix(c.Name, p) {
				out = append(out, c)
				break
			}
		}
	}
	return out
}
