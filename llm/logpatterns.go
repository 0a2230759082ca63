package llm

// The lines of llama.cpp's log this package acts on.
//
// llama.cpp tells through its log, and only there, which tensors it
// repacks and when, how large its weight buffers are, and how large the
// KV cache is. These patterns match the format strings of llama.cpp
// LibraryVersion (v0.5.0); testdata holds lines recorded from each CPU
// variant that loads here, and logpatterns_test.go checks every pattern
// against them. A new release must be recorded and checked again before
// LibraryVersion changes: a line that no longer matches turns the gated
// early load into a load after the download (see gate.go), and the pages
// are then kept, never given back wrongly.

import (
	"regexp"
	"strconv"
)

var (
	// ggml-cpu/repack.cpp: "%s: repack tensor %s with %s_%dx%d", and
	// ggml-cpu/amx/amx.cpp: "%s: amx repack tensor %s of type %s"; both
	// logged on the loading thread just before the tensor is read from
	// the mapping.
	repackLine = regexp.MustCompile(`(?:^|[ .:])(amx )?repack tensor (\S+) (?:with (\S+)|of type (\S+))$`)

	// llama-model.cpp load_tensors: "%s: %12s model buffer size = %8.2f
	// MiB", one line per weight buffer, before any tensor is read.
	modelBufferLine = regexp.MustCompile(`load_tensors: +(\S+) model buffer size = +([0-9.]+) MiB$`)

	// llama-model-loader.cpp create_tensor: "%s: loading tensor %s", for
	// each tensor the model's code creates: twice for one it uses twice
	// (TENSOR_DUPLICATED: token_embd.weight as the output of a model
	// with tied embeddings), from the mapping and from a repack buffer.
	createTensorLine = regexp.MustCompile(`create_tensor: loading tensor (\S+)$`)

	// llama-kv-cache.cpp: "%s: %10s KV buffer size = %8.2f MiB".
	kvBufferLine = regexp.MustCompile(`KV buffer size = +([0-9.]+) MiB`)
)

// repackMatch is a parsed repack line.
type repackMatch struct {
	tensor string
	amx    bool
	kind   string // "q4_K_8x8" for CPU_REPACK, the ggml type for AMX
}

func parseRepack(line string) (repackMatch, bool) {
	m := repackLine.FindStringSubmatch(line)
	if m == nil {
		return repackMatch{}, false
	}
	return repackMatch{tensor: m[2], amx: m[1] != "", kind: m[3] + m[4]}, true
}

// parseCreateTensor returns the tensor of a create_tensor line.
func parseCreateTensor(line string) (string, bool) {
	m := createTensorLine.FindStringSubmatch(line)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// parseModelBuffer returns the buffer type and size (to 0.01 MiB) of a
// model buffer line.
func parseModelBuffer(line string) (string, int64, bool) {
	m := modelBufferLine.FindStringSubmatch(line)
	if m == nil {
		return "", 0, false
	}
	n, ok := parseMiB(m[2])
	return m[1], n, ok
}

// parseKVBuffer returns the size of a KV buffer line.
func parseKVBuffer(line string) (int64, bool) {
	m := kvBufferLine.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	return parseMiB(m[1])
}

func parseMiB(s string) (int64, bool) {
	mib, err := strconv.ParseFloat(s, 64)
	if err != nil || mib < 0 {
		return 0, false
	}
	return int64(mib * (1 << 20)), true
}

// mibRounding is how far a size logged as "%.2f MiB" can be from the
// real one.
const mibRounding = (1 << 20) / 200
