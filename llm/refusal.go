package llm

// llama.cpp's reason for refusing a model.
//
// llama.cpp says why it cannot load a model only in its log; its API
// returns a null model. While a load runs, its warning and error lines are
// kept here, so that the error of Load carries the reason and is
// classified: a file llama.cpp refuses is an invalid model, unless the
// reason is memory or the file's reading.

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
)

// refusing is the load whose log lines are kept, if any (loads are
// serialised by loadMu).
var refusing atomic.Pointer[refusalLog]

type refusalLog struct {
	mu    sync.Mutex
	lines []string // warnings and errors, at most maxRefusalLines
}

const maxRefusalLines = 64

// watchRefusal starts keeping llama.cpp's warnings and errors; stop ends it.
func watchRefusal() *refusalLog {
	r := &refusalLog{}
	refusing.Store(r)
	return r
}

func (r *refusalLog) stop() { refusing.CompareAndSwap(r, nil) }

// logLine is called by logText with each whole line llama.cpp logs; r may
// be nil.
func (r *refusalLog) logLine(level slog.Level, line string) {
	if r == nil || level < slog.LevelWarn {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) == maxRefusalLines {
		r.lines = r.lines[1:]
	}
	r.lines = append(r.lines, line)
}

// reason returns llama.cpp's last error line (its last warning if it logged
// no error), without the name of the function that logged it; "" if it
// logged neither.
func (r *refusalLog) reason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	// llama.cpp ends a refusal with lines that only say it failed
	// ("failed to load model"): the line before says why.
	for i := len(r.lines) - 1; i >= 0; i-- {
		line := strings.TrimPrefix(funcPrefix.ReplaceAllString(r.lines[i], ""), "error loading model: ")
		if line != "" && !genericFailure.MatchString(line) {
			return line
		}
	}
	return ""
}

var (
	funcPrefix     = regexp.MustCompile(`^[a-z_0-9:]+: `)
	genericFailure = regexp.MustCompile(`^(failed to load model|error loading model: ?|failed to initialize model|llama_model_load: .*|Failed to load model)$`)
	// Reasons that are the machine's, not the file's.
	notTheFile = regexp.MustCompile(`(?i)(allocat|out of memory|cannot allocate memory|mmap failed|failed to mmap|failed to open|no such file|permission denied|resource temporarily unavailable)`)
)

// refused returns the error of a load llama.cpp gave up on (what is its
// API's error): [ErrInvalidModel] with llama.cpp's reason, unless the
// reason is memory or reading the file.
func (r *refusalLog) refused(path, what string, err error) error {
	reason := r.reason()
	if reason == "" {
		return fmt.Errorf("llm: llama.cpp %s %s (set Options.Logger to see why): %w", what, path, err)
	}
	if notTheFile.MatchString(reason) {
		return fmt.Errorf("llm: llama.cpp %s %s: %s: %w", what, path, reason, err)
	}
	return fmt.Errorf("%w %s: llama.cpp %s it: %s", ErrInvalidModel, path, what, reason)
}
