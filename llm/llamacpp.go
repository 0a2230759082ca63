package llm

// The few llama.cpp calls that ollama's llama package does not wrap. The
// library is compiled and linked by that package; these prototypes only
// name its symbols, with opaque pointers for the structs.

/*
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef void (*memload_log_fn)(int level, const char *text, void *user_data);
typedef bool (*memload_abort_fn)(void *data);

void llama_backend_init(void);
void llama_log_set(memload_log_fn log_callback, void *user_data);
const char *llama_print_system_info(void);
void llama_free(void *ctx);
uint32_t llama_n_ctx(const void *ctx);
void llama_set_embeddings(void *ctx, bool embeddings);
void llama_set_abort_callback(void *ctx, memload_abort_fn abort_callback, void *data);

extern void memloadLog(int level, char *text, void *user_data);

static bool memload_abort(void *flag) {
	return __atomic_load_n((int32_t *)flag, __ATOMIC_RELAXED) != 0;
}

static void memload_set_abort(void *ctx, int32_t *flag) {
	llama_set_abort_callback(ctx, memload_abort, flag);
}

static void memload_log_init(void) {
	llama_log_set((memload_log_fn)memloadLog, NULL);
}
*/
import "C"

import (
	"context"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ollama/ollama/llama"
)

func init() {
	// ollama's llama and ggml packages print llama.cpp's log to stderr from
	// their init functions; route it to a Logger instead. This init runs
	// after theirs, since this package imports them.
	C.memload_log_init()
}

var backendInit = sync.OnceFunc(func() {
	// Not llama.BackendInit: it also searches ../lib/ollama for backend
	// libraries and logs through slog.Default. The CPU backend is linked in.
	C.llama_backend_init()
})

// logSink receives llama.cpp's log lines: the Logger of the Model being
// loaded, or of the last one loaded.
var logSink atomic.Pointer[slog.Logger]

var logLine struct {
	sync.Mutex
	buf   strings.Builder
	level slog.Level
}

// ggml_log_level values.
const (
	ggmlLogDebug = 1
	ggmlLogWarn  = 3
	ggmlLogError = 4
	ggmlLogCont  = 5
)

//export memloadLog
func memloadLog(level C.int, text *C.char, _ unsafe.Pointer) {
	logger := logSink.Load()
	if logger == nil {
		return
	}
	// llama.cpp logs lines in pieces (progress dots, CONT parts): join
	// them and log whole lines. Its INFO level is chatty: Debug here.
	l := &logLine
	l.Lock()
	defer l.Unlock()
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
	l.buf.WriteString(C.GoString(text))
	s := l.buf.String()
	if !strings.HasSuffix(s, "\n") {
		return
	}
	l.buf.Reset()
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			logger.Log(context.Background(), l.level, "llama.cpp: "+line)
		}
	}
}

// SystemInfo returns llama.cpp's description of the CPU features it was
// compiled for, such as "CPU : SSE3 = 1 | ... | AVX2 = 1 | ...".
func SystemInfo() string {
	backendInit()
	return strings.TrimSpace(C.GoString(C.llama_print_system_info()))
}

// hasSIMD reports whether llama.cpp was built with the vector
// instructions that make it fast on this architecture.
func hasSIMD(info string) (bool, string) {
	want := map[string]string{"amd64": "AVX2 = 1", "arm64": "NEON = 1"}[runtime.GOARCH]
	return want == "" || strings.Contains(info, want), strings.TrimSuffix(want, " = 1")
}

// contextPtrOK records whether llama.Context still has its C pointer as
// its first field, as in ollama v0.11.4. ollama's package neither frees a
// context nor sets its abort callback; with the pointer this package does
// both. Without it, contexts leak and cancellation waits for the current
// batch.
var contextPtrOK = func() bool {
	t := reflect.TypeFor[llama.Context]()
	return t.NumField() > 0 && t.Field(0).Name == "c" && t.Field(0).Offset == 0 &&
		t.Field(0).Type.Kind() == reflect.Pointer
}()

func contextPtr(c *llama.Context) unsafe.Pointer {
	if !contextPtrOK {
		return nil
	}
	return *(*unsafe.Pointer)(unsafe.Pointer(c))
}

// abortFlag is C memory that llama.cpp's abort callback polls between
// graph nodes, so that a long prompt evaluation stops when a context ends.
type abortFlag struct{ p *C.int32_t }

func newAbortFlag(ctx unsafe.Pointer) abortFlag {
	f := abortFlag{p: (*C.int32_t)(C.calloc(1, 4))}
	if ctx != nil {
		C.memload_set_abort(ctx, f.p)
	}
	return f
}

func (f abortFlag) set(v bool) {
	var x int32
	if v {
		x = 1
	}
	atomic.StoreInt32((*int32)(unsafe.Pointer(f.p)), x)
}

func (f abortFlag) isSet() bool { return atomic.LoadInt32((*int32)(unsafe.Pointer(f.p))) != 0 }

func (f abortFlag) free() { C.free(unsafe.Pointer(f.p)) }

func freeContext(ctx unsafe.Pointer) {
	if ctx != nil {
		C.llama_free(ctx)
	}
}

// contextSize returns the context window llama.cpp allocated, which may be
// padded beyond the one asked for.
func contextSize(ctx unsafe.Pointer, asked int) int {
	if ctx == nil {
		return asked
	}
	return int(C.llama_n_ctx(ctx))
}

func disableEmbeddings(ctx unsafe.Pointer) {
	// ollama's NewContextParams turns embeddings on; a chat needs logits only.
	if ctx != nil {
		C.llama_set_embeddings(ctx, C.bool(false))
	}
}
