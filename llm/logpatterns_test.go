package llm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/memload/memload/llm/internal/gguf"
)

// The format strings of the log lines logpatterns.go matches, as the
// libraries of LibraryVersion hold them.
var logFormats = map[string]string{
	"libggml-cpu-haswell.so":        "%s: repack tensor %s with %s_%dx%d",
	"libggml-cpu-sapphirerapids.so": "%s: amx repack tensor %s of type %s",
	"libllama.so":                   "%s: %12s model buffer size = %8.2f MiB",
	"libllama.v0.5.0.so":            "%s: %10s KV buffer size = %8.2f MiB",
}

// recordedModel is the model the logs in testdata were recorded loading.
func recordedModel(t *testing.T) (string, *gguf.Header) {
	path := q4kmModel(t, "qwen2")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	h, err := gguf.Parse(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return path, h
}

// TestRecordLog records, into testdata, llama.cpp's log of a load of a
// tiny Q4_K_M model with each CPU variant that runs here (each in a child
// process whose library directory holds only that variant), and writes
// the AMX lines such a load would log from the format strings of
// libggml-cpu-sapphirerapids.so, since no machine here has AMX. It runs
// only with MEMLOAD_RECORD_LOG=1: the recordings are checked in.
func TestRecordLog(t *testing.T) {
	if v := os.Getenv("MEMLOAD_TEST_VARIANT"); v != "" && os.Getenv("MEMLOAD_RECORD_LOG") != "" {
		recordLog(t, v)
		return
	}
	if os.Getenv("MEMLOAD_RECORD_LOG") == "" {
		t.Skip("set MEMLOAD_RECORD_LOG=1 to record llama.cpp's log into testdata")
	}
	lib, err := openLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	variants, _ := filepath.Glob(filepath.Join(lib.dir, "libggml-cpu-*.so"))
	for _, v := range variants {
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(v), "libggml-cpu-"), ".so")
		t.Run(name, func(t *testing.T) {
			dir := variantLibrary(t, lib, name)
			cmd := exec.Command(os.Args[0], "-test.run=^TestRecordLog$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), LibraryEnv+"="+dir, "MEMLOAD_TEST_VARIANT="+name)
			if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "--- PASS: TestRecordLog") {
				t.Skipf("the %s variant does not load here: %v\n%s", name, err, out)
			}
		})
	}
	_, h := recordedModel(t)
	var b strings.Builder
	fmt.Fprintf(&b, "# Not recorded: the lines an AMX load of the model would log, from the format strings of\n")
	fmt.Fprintf(&b, "# libggml-cpu-sapphirerapids.so and libllama.so %s (TestRecordLog), until an AMX machine records them.\n", LibraryVersion)
	var amx int64
	var names []string
	for _, ti := range h.Tensors {
		// AMX takes the matrices it has kernels for, in the order the
		// model creates them (output first), but not token_embd (read
		// by row) nor the norms.
		if len(ti.Dims) == 2 && amxKernelTypes[ti.Type] && ti.Name != "token_embd.weight" {
			names = append(names, ti.Name)
			// amx/mmq.cpp get_row_size: q4_K rows hold 4 bytes more
			// per block of 256.
			row := int64(ti.Bytes / ti.Dims[1])
			if ti.Type == 12 {
				row += int64(ti.Dims[0]) / 256 * 4
			}
			amx += alignUp(row*int64(ti.Dims[1]), 64)
		}
	}
	fmt.Fprintf(&b, "%s\n", fmt.Sprintf(logFormats["libllama.so"], "load_tensors", "AMX", float64(amx)/(1<<20)))
	typeName := map[uint32]string{12: "q4_K", 14: "q6_K"}
	// The order llama.cpp's qwen2 code creates the tensors in.
	order := []string{"output.weight"}
	for i := range 2 {
		for _, n := range []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_down", "ffn_up"} {
			order = append(order, fmt.Sprintf("blk.%d.%s.weight", i, n))
		}
	}
	for _, name := range order {
		if slices.Contains(names, name) {
			fmt.Fprintf(&b, "%s\n", fmt.Sprintf(logFormats["libggml-cpu-sapphirerapids.so"], "ggml_backend_amx_buffer_set_tensor", name, typeName[tensorByName(h, name).Type]))
		}
	}
	if err := os.WriteFile(filepath.Join("testdata", "llama-"+LibraryVersion+"-amx.log"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func tensorByName(h *gguf.Header, name string) gguf.TensorInfo {
	for _, ti := range h.Tensors {
		if ti.Name == name {
			return ti
		}
	}
	return gguf.TensorInfo{}
}

func recordLog(t *testing.T, variant string) {
	lib, err := openLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	if lib.variant != variant {
		t.Fatalf("llama.cpp picked %s, want %s", lib.variant, variant)
	}
	path, _ := recordedModel(t)
	var mu sync.Mutex
	var b strings.Builder
	fmt.Fprintf(&b, "# llama.cpp %s's log of a load of the tiny qwen2 Q4_K_M model with the %s variant (TestRecordLog)\n", LibraryVersion, variant)
	h := &recordHandler{fn: func(r slog.Record) {
		if line, ok := strings.CutPrefix(r.Message, "llama.cpp: "); ok {
			mu.Lock()
			fmt.Fprintf(&b, "%s\n", line)
			mu.Unlock()
		}
	}}
	m, err := LoadFile(context.Background(), memfdCopy(t, path), testOptions, func(o *Options) { o.Logger = slog.New(h) })
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	mu.Lock()
	defer mu.Unlock()
	if err := os.WriteFile(filepath.Join("testdata", "llama-"+LibraryVersion+"-"+variant+".log"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLogPatterns checks the patterns of logpatterns.go against llama.cpp's
// log as recorded in testdata for each CPU variant (and AMX lines made from
// the library's format strings): each pattern matches its lines and no
// other, and the gate's guard, replaying a recording, finds that the
// tensors announced add up to the buffers logged.
func TestLogPatterns(t *testing.T) {
	lib, err := openLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	for file, format := range logFormats {
		b, err := os.ReadFile(filepath.Join(lib.dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(format+"\n\x00")) {
			t.Errorf("%s no longer logs %q: record testdata again (TestRecordLog) and check logpatterns.go", file, format)
		}
	}
	_, h := recordedModel(t)
	logs, _ := filepath.Glob(filepath.Join("testdata", "llama-"+LibraryVersion+"-*.log"))
	if len(logs) < 3 {
		t.Fatalf("%d recordings in testdata for %s; run TestRecordLog", len(logs), LibraryVersion)
	}
	for _, path := range logs {
		variant := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "llama-"+LibraryVersion+"-"), ".log")
		t.Run(variant, func(t *testing.T) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			g := newGate(h, func(_, _ int64) error { return nil }, func(_, _ int64) bool { return true })
			repacks, buffers, kv, created := 0, 0, 0, map[string]int{}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, "#") {
					continue
				}
				m, isRepack := parseRepack(line)
				if isRepack != strings.Contains(line, "repack tensor") {
					t.Errorf("parseRepack(%q) = %v", line, isRepack)
				}
				if isRepack {
					if !g.started {
						g.progress() // llama.cpp calls it before each tensor
					}
					repacks++
					if _, ok := g.spans[m.tensor]; !ok || m.kind == "" || m.amx != strings.Contains(line, "amx") {
						t.Errorf("parseRepack(%q) = %+v", line, m)
					}
				}
				if _, n, ok := parseModelBuffer(line); ok != strings.Contains(line, "model buffer size") || ok && n <= 0 {
					t.Errorf("parseModelBuffer(%q) = %d, %v", line, n, ok)
				} else if ok {
					buffers++
				}
				if name, ok := parseCreateTensor(line); ok != strings.Contains(line, "create_tensor: loading tensor") || ok && name == "" {
					t.Errorf("parseCreateTensor(%q) = %q, %v", line, name, ok)
				} else if ok {
					created[name]++
				}
				if n, ok := parseKVBuffer(line); ok != strings.Contains(line, "KV buffer size") || ok && n <= 0 {
					t.Errorf("parseKVBuffer(%q) = %d, %v", line, n, ok)
				} else if ok {
					kv++
				}
				g.logLine(line)
			}
			if err := g.verdict(); err != nil || g.fallback != "" {
				t.Errorf("replayed, the guard doubts: %s", g.fallback)
			}
			t.Logf("%s: %d repack lines, %d buffer lines, %d KV lines; buffers %v", variant, repacks, buffers, kv, g.buffers)
			if buffers == 0 || variant != "amx" && kv == 0 {
				t.Errorf("%d model buffer lines and %d KV buffer lines", buffers, kv)
			}
			// With AVX2, llama.cpp repacks the model's 12 Q4_K matrices
			// but token_embd; on arm64 with dotprod, and with AMX, its 3
			// Q6_K ones too; without either, none.
			want := 0
			switch {
			case variant == "amx" || strings.HasPrefix(variant, "arm") && g.buffers["CPU_REPACK"] > 0:
				want = 15
			case g.buffers["CPU_REPACK"] > 0:
				want = 12
			}
			if repacks != want {
				t.Errorf("%d repack lines, want %d", repacks, want)
			}
			if repacks > 0 {
				// A tensor read unannounced (its line dropped) is seen.
				if _, err := f.Seek(0, 0); err != nil {
					t.Fatal(err)
				}
				g, dropped := newGate(h, func(_, _ int64) error { return nil }, func(_, _ int64) bool { return true }), false
				for sc := bufio.NewScanner(f); sc.Scan(); {
					if _, ok := parseRepack(sc.Text()); ok && !dropped {
						g.progress()
						dropped = true
						continue
					}
					g.logLine(sc.Text())
				}
				if g.verdict() == nil || g.fallback == "" {
					t.Error("replayed without its first repack line, the guard does not doubt")
				}
			}
		})
	}
}

// TestGateCheck gives the gate's guard the weight buffers llama.cpp could
// log before its first tensor: only those whose reads are all announced
// let the load go ahead of the writing.
func TestGateCheck(t *testing.T) {
	q4 := gguf.TensorInfo{Name: "blk.0.attn_q.weight", Dims: []uint64{256, 256}, Type: 12, Bytes: 36864}
	f16 := gguf.TensorInfo{Name: "blk.0.attn_k.weight", Dims: []uint64{256, 256}, Type: 1, Offset: 36864, Bytes: 131072}
	norm := gguf.TensorInfo{Name: "blk.0.attn_norm.weight", Dims: []uint64{256}, Type: 0, Offset: 167936, Bytes: 1024}
	for _, tc := range []struct {
		name    string
		tensors []gguf.TensorInfo
		buffers map[string]int64
		doubt   string // in the reason, or "" for none
	}{
		{"repack", []gguf.TensorInfo{q4, f16, norm}, map[string]int64{"CPU_Mapped": 1, "CPU_REPACK": 1}, ""},
		{"AMX, quantized", []gguf.TensorInfo{q4, norm}, map[string]int64{"CPU_Mapped": 1, "AMX": 1}, ""},
		{"AMX, an F16 matrix", []gguf.TensorInfo{q4, f16, norm}, map[string]int64{"CPU_Mapped": 1, "AMX": 1}, "AMX would copy blk.0.attn_k.weight"},
		{"KleidiAI", []gguf.TensorInfo{q4}, map[string]int64{"CPU_Mapped": 1, "CPU_KLEIDIAI": 1}, "CPU_KLEIDIAI"},
		{"a host buffer", []gguf.TensorInfo{q4}, map[string]int64{"CPU": 1}, "the CPU buffer"},
		{"no buffer lines", []gguf.TensorInfo{q4}, nil, "no model buffer sizes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &gguf.Header{Tensors: tc.tensors, DataOffset: 4096, Size: 4096 + 168960}
			g := newGate(h, func(_, _ int64) error { return nil }, func(_, _ int64) bool { return false })
			for k, v := range tc.buffers {
				g.buffers[k] = v
			}
			if got := g.check(); tc.doubt == "" && got != "" || tc.doubt != "" && !strings.Contains(got, tc.doubt) {
				t.Errorf("check() = %q, want %q", got, tc.doubt)
			}
		})
	}
}
