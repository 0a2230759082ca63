package llm

// Holding llama.cpp's reads of a model's weights until they are written.
//
// Mapping a model, llama.cpp v0.5.0 reads during its load only the tensors
// it repacks (llama-model-loader.cpp load_all_data; the other tensors are
// read when the model computes), one at a time on the loading thread, and
// logs each on that thread just before it reads it: "repack tensor NAME
// with …" (CPU_REPACK) or "amx repack tensor NAME of type …" (AMX). So a
// load can start as soon as the GGUF header is written, and the log line
// can wait until the tensor's bytes are: the gate. llama.cpp calls the
// progress callback before each tensor; returning false there ends the
// load cleanly, which is how a failed, cancelled or restarted writing
// stops a load waiting at the gate.
//
// It leans on log text, so it is guarded, and in any doubt llama.cpp waits
// for the whole file before it reads anything (EarlyStats.Fallback says
// why):
//   - Before the first tensor, every weight buffer llama.cpp logged must be
//     of a type whose reads are announced: CPU_Mapped (not read), CPU_REPACK,
//     and AMX if the model holds no matrix AMX would copy unannounced
//     (F16 with a plain memcpy; BF16 too, for safety). Any other (KleidiAI on arm64, a buffer
//     of a later release) is a doubt.
//   - A repack line naming no tensor of the file is a doubt.
//   - Once llama.cpp has loaded the model, the bytes announced must add up
//     to the buffer sizes it logged: fewer means a tensor was read
//     unannounced, perhaps before its bytes came, and the model is freed
//     and loaded again after the last byte (errGateFallback). llama.cpp logs
//     sizes to 0.01 MiB, so a tensor under 5 KiB could hide in the
//     rounding; the buffer check before the load is what rules those out.
// llama.cpp's check_tensors, which reads every tensor, is never set here.

import (
	"errors"
	"fmt"
	"time"

	"github.com/memload/memload/llm/internal/gguf"
)

// errGateFallback ends an early load whose gated reads did not add up:
// the model is loaded again, after the last byte.
var errGateFallback = errors.New("llm: the gated load's reads did not add up")

// ggml types, as in the GGUF tensor table.
const (
	typeF16  = 1
	typeBF16 = 30
)

// amxKernelTypes are the types AMX repacks, announcing each
// (amx/common.h qtype_has_amx_kernels).
var amxKernelTypes = map[uint32]bool{2: true, 3: true, 8: true, 12: true, 13: true, 14: true, 23: true}

// gateOff turns the gate's waiting off, for the test that shows the gate
// is needed.
var gateOff bool

// gate holds one load's reads of repacked tensors until they are written.
type gate struct {
	tensors map[string]gguf.TensorInfo
	spans   map[string]span
	size    int64
	wait    func(off, end int64) error // until bytes [off, end) are written
	onWait  func(off, end int64)       // tests: called before a wait that blocks
	inPlace func(off, end int64) bool  // whether they are

	// The fields below are used on llama.cpp's loading thread only.
	buffers    map[string]int64 // logged model buffer sizes, by type
	started    bool             // the first tensor's progress call came
	all        bool             // waited for the whole file: the fallback
	allAtStart bool             // before reading anything
	fallback   string           // why
	announced  map[string]int64 // bytes announced per buffer type
	count      map[string]int
	err        error // why the writing will not complete: abort
	waits      int
	waited     time.Duration
}

func newGate(h *gguf.Header, wait func(off, end int64) error, inPlace func(off, end int64) bool) *gate {
	g := &gate{
		tensors: map[string]gguf.TensorInfo{}, spans: map[string]span{},
		size: h.Size, wait: wait, inPlace: inPlace,
		buffers: map[string]int64{}, announced: map[string]int64{}, count: map[string]int{},
	}
	for _, t := range h.Tensors {
		off := h.DataOffset + int64(t.Offset)
		g.tensors[t.Name] = t
		g.spans[t.Name] = span{off, off + int64(t.Bytes)}
	}
	return g
}

// logLine sees one line of llama.cpp's log.
func (g *gate) logLine(line string) {
	if name, size, ok := parseModelBuffer(line); ok {
		g.buffers[name] += size
		return
	}
	m, ok := parseRepack(line)
	if !ok {
		return
	}
	buf := "CPU_REPACK"
	if m.amx {
		buf = "AMX"
	}
	s, known := g.spans[m.tensor]
	switch {
	case !g.started:
		g.doubt(fmt.Sprintf("llama.cpp repacked %s before its first progress call", m.tensor))
	case !known:
		g.doubt(fmt.Sprintf("llama.cpp repacked %s, a tensor the file does not hold", m.tensor))
	default:
		g.await(s.off, s.end)
	}
	if known {
		g.announced[buf] += alignUp(s.end-s.off, 32)
		g.count[buf]++
	}
}

// progress is called before each tensor, and once after the last; false
// aborts the load.
func (g *gate) progress() bool {
	if !g.started {
		g.started = true
		if why := g.check(); why != "" {
			// Nothing is read yet: the whole load reads a complete file.
			g.doubt(why)
			g.allAtStart = true
		}
	}
	return g.err == nil
}

// verdict is called once llama.cpp has loaded the model: errGateFallback
// if the bytes announced do not add up to the buffers logged.
func (g *gate) verdict() error {
	if why := g.addUp(); why != "" {
		g.fallback = why
		return fmt.Errorf("%w: %s", errGateFallback, why)
	}
	return nil
}

// check returns a doubt about the buffers llama.cpp logged, or "".
func (g *gate) check() string {
	if len(g.buffers) == 0 {
		return "llama.cpp logged no model buffer sizes"
	}
	for name := range g.buffers {
		switch name {
		case "CPU_Mapped", "CPU_REPACK":
		case "AMX":
			// AMX takes F16 matrices too (amx.cpp supports_op), and
			// copies them without a log line; BF16 for safety.
			for _, t := range g.tensors {
				if len(t.Dims) >= 2 && (t.Type == typeF16 || t.Type == typeBF16) {
					return fmt.Sprintf("AMX would copy %s (type %d) without a log line", t.Name, t.Type)
				}
			}
		default:
			return fmt.Sprintf("llama.cpp reads the %s buffer's tensors without a log line", name)
		}
	}
	return ""
}

// addUp returns a doubt if the bytes announced do not add up to the
// buffer sizes logged, or "".
func (g *gate) addUp() string {
	if g.allAtStart {
		return ""
	}
	if n, want := g.announced["CPU_REPACK"], g.buffers["CPU_REPACK"]; n < want-mibRounding || n > want+mibRounding {
		return fmt.Sprintf("%d bytes of %d tensors were announced for CPU_REPACK, whose buffer llama.cpp logged as %d", n, g.count["CPU_REPACK"], want)
	}
	// AMX pads each row for its kernels (amx/mmq.cpp get_row_size): by
	// at most an eighth.
	if n, want := g.announced["AMX"], g.buffers["AMX"]; want < n-mibRounding || want > n+n/8+mibRounding {
		return fmt.Sprintf("%d bytes of %d tensors were announced for AMX, whose buffer llama.cpp logged as %d", n, g.count["AMX"], want)
	}
	return ""
}

// doubt makes llama.cpp wait for the whole file, now: from here on every
// byte it could read is in place.
func (g *gate) doubt(why string) {
	if g.all {
		return
	}
	g.all, g.fallback = true, why
	g.await(0, g.size)
}

// await waits until bytes [off, end) are written: a tensor's own, not
// those before it, when the writer tells of bytes out of order
// (EarlyLoad.WrittenRange).
func (g *gate) await(off, end int64) {
	if gateOff || g.err != nil || g.inPlace(off, end) {
		return
	}
	if g.onWait != nil {
		g.onWait(off, end)
	}
	start := time.Now()
	g.waits++
	if err := g.wait(off, end); err != nil {
		g.err = err
	}
	g.waited += time.Since(start)
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }
