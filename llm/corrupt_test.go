package llm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
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
	"github.com/memload/memload/llm/internal/gguf"
)

// A model file must never take the process down. These tests load damaged
// models in child processes (llm/internal/loadchild), so that a crash
// inside llama.cpp fails the test instead of ending it.

var corruptRun = flag.String("corrupt.run", "", "TestCorruptModels: load only the corruptions whose names match this regexp")

// childResult is what the child prints (loadchild's Result).
type childResult struct {
	LoadErr string `json:"load_err,omitempty"`
	Invalid bool   `json:"invalid,omitempty"`
	ChatErr string `json:"chat_err,omitempty"`
	Full    bool   `json:"full,omitempty"`
	Answer  string `json:"answer,omitempty"`
}

const childResultPrefix = "loadchild-result: "

var crashLine = regexp.MustCompile(`GGML_ASSERT|GGML_ABORT|fatal|terminate|what\(\)|SIG[A-Z]+|panic:|error`)

// loadChild returns the path of llm/internal/loadchild, built without the
// race detector (a child of a -race test binary would take seconds to
// start), once per process.
var loadChild = sync.OnceValues(func() (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir, err := os.MkdirTemp("", "loadchild")
	if err != nil {
		return "", err
	}
	childDir = dir
	bin := filepath.Join(dir, "loadchild")
	out, err := exec.Command(goTool, "build", "-o", bin, "github.com/memload/memload/llm/internal/loadchild").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build loadchild: %v: %s", err, out)
	}
	return bin, nil
})

var childDir string // removed by TestMain

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
	bin, err := loadChild()
	if err != nil {
		return outcome{kind: "unclassified", detail: err.Error()}
	}
	cmd := exec.CommandContext(ctx, bin, path)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
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
			if err := writeCorruption(path, c); err != nil {
				out[i] = outcome{name: c.Name, kind: "unclassified", detail: err.Error()}
				return
			}
			defer os.Remove(path)
			if o, ok := refusedInGo(path); ok {
				out[i] = o
			} else {
				out[i] = runChild(context.Background(), path, 2*time.Minute)
			}
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

// refusedInGo loads, in this process, a file the GGUF check refuses: Load
// refuses it before llama.cpp sees it, so it cannot crash, and no child
// process is needed. ok is false for a file the check passes.
func refusedInGo(path string) (o outcome, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return outcome{kind: "unclassified", detail: err.Error()}, true
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return outcome{kind: "unclassified", detail: err.Error()}, true
	}
	h, err := gguf.Parse(f, fi.Size())
	f.Close()
	if err == nil {
		_, err = h.Check()
	}
	if err == nil {
		return outcome{}, false
	}
	_, err = Load(context.Background(), path, testOptions)
	if errors.Is(err, ErrInvalidModel) {
		return outcome{kind: "refused", detail: err.Error()}, true
	}
	return outcome{kind: "unclassified", detail: fmt.Sprintf("the GGUF check refuses it, Load says %v", err)}, true
}

func writeCorruption(path string, c testutil.Corruption) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := c.WriteTo(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
