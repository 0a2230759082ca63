package llm

// A load as llama.cpp's callbacks see it.
//
// llama.cpp has one log callback for the process, and reports what it does
// while it loads a model only there: which tensor it repacks next, how
// large its buffers are. A load of a model is therefore a session that the
// callback dispatches each whole line to, in one place: the gate that
// holds llama.cpp's reads until their bytes are written (gate.go), the
// watcher that gives back the memfd's pages of repacked tensors
// (repack.go), the one that gives back the empty KV cache's pages
// (kvpages.go), and a record of llama.cpp's warnings and errors, so that a
// failed load says why in llama.cpp's words. Loads are serialised
// (loadMu), so one session at a time is current; between loads, the lines
// go to the Logger of the last one.

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ebitengine/purego"
)

// loadSession is one load of a model into llama.cpp, from the model's
// load to its context's creation.
type loadSession struct {
	id     uintptr // the progress callback's data: no Go pointer crosses over
	logger *slog.Logger
	gate   *gate      // nil unless the file is still being written
	repack *repackLog // nil unless pages of repacked tensors are given back
	// kv is set while the context is created, if its pages are given
	// back: after begin, so atomically, as other threads may log.
	kv atomic.Pointer[kvLog]

	mu    sync.Mutex
	lines []string // llama.cpp's last warnings and errors, at most maxLines
}

const maxLines = 16

// current is the session of the load in progress, or of the last one.
var current atomic.Pointer[loadSession]

func init() { current.Store(&loadSession{logger: slog.New(slog.DiscardHandler)}) }

var sessionIDs atomic.Uintptr

// newSession returns a session of a load logging to logger.
func newSession(logger *slog.Logger) *loadSession {
	return &loadSession{id: sessionIDs.Add(1), logger: logger}
}

// begin makes s the current session. Callers hold loadMu.
func (s *loadSession) begin() { current.Store(s) }

// end stops dispatching to s's watchers: later lines only go to its
// Logger.
func (s *loadSession) end() { current.Store(&loadSession{logger: s.logger}) }

// line sees one whole line of llama.cpp's log, at its level.
func (s *loadSession) line(level slog.Level, line string) {
	if level >= slog.LevelWarn {
		s.mu.Lock()
		if len(s.lines) == maxLines {
			s.lines = s.lines[1:]
		}
		s.lines = append(s.lines, line)
		s.mu.Unlock()
	}
	// The gate first: a repack line returns from it only once the
	// tensor's bytes are written; the repack watcher then gives back the
	// pages of the tensor repacked before.
	if s.gate != nil {
		s.gate.logLine(line)
	}
	if s.repack != nil {
		s.repack.logLine(line)
	}
	if kv := s.kv.Load(); kv != nil {
		kv.logLine(line)
	}
	s.logger.Log(context.Background(), level, "llama.cpp: "+line)
}

// why returns llama.cpp's last warnings and errors of the session, to end
// an error with, or where to find them if there were none.
func (s *loadSession) why() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lines) == 0 {
		return " (set Options.Logger to see llama.cpp's log)"
	}
	return ": llama.cpp says: " + strings.Join(s.lines, "; ")
}

// progress is llama.cpp's progress callback, called before each tensor
// is loaded: false aborts the load.
func (s *loadSession) progress() bool {
	if s.gate == nil {
		return true
	}
	return s.gate.progress()
}

var logLine struct {
	sync.Mutex
	buf   strings.Builder
	level slog.Level
}

// ggml_log_level values.
const (
	ggmlLogWarn  = 3
	ggmlLogError = 4
	ggmlLogCont  = 5
)

// logCallback returns the C function llama.cpp logs through (one for the
// process: purego callbacks are never freed).
var logCallback = sync.OnceValue(func() uintptr {
	return purego.NewCallback(func(level int32, text uintptr, _ uintptr) uintptr {
		logText(level, goString(text))
		return 0
	})
})

// progressCallback returns the C function llama.cpp reports a load's
// progress to (one for the process: yzma's SetProgressCallback makes a new
// one, never freed, on each call). It finds the session by the data
// pointer, which is only ever the current session's id, never a Go
// pointer.
var progressCallback = sync.OnceValue(func() uintptr {
	return purego.NewCallback(func(_ float32, id uintptr) uintptr {
		s := current.Load()
		if s.id != id {
			return 1
		}
		if s.progress() {
			return 1
		}
		return 0
	})
})

func logText(level int32, text string) {
	// llama.cpp logs lines in pieces (progress dots, CONT parts): join
	// them and dispatch whole lines, outside the lock, since the gate
	// may wait in its dispatch. Its INFO level is chatty: Debug here.
	l := &logLine
	l.Lock()
	if level != ggmlLogCont {
		switch level {
		case ggmlLogWarn:
			l.level = slog.LevelWarn
		case ggmlLogError:
			l.level = slog.LevelError
		default:
			l.level = slog.LevelDebug
		}
	}
	l.buf.WriteString(text)
	s := l.buf.String()
	lvl := l.level
	if !strings.HasSuffix(s, "\n") {
		l.Unlock()
		return
	}
	l.buf.Reset()
	l.Unlock()
	sess := current.Load()
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			sess.line(lvl, line)
		}
	}
}
