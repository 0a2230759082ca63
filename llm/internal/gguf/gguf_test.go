package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/memload/memload/internal/testutil"
)

// builder writes GGUF files field by field, so that tests can write
// invalid ones too.
type builder struct{ bytes.Buffer }

func (b *builder) u32(v uint32) *builder { binary.Write(b, binary.LittleEndian, v); return b }
func (b *builder) u64(v uint64) *builder { binary.Write(b, binary.LittleEndian, v); return b }
func (b *builder) str(s string) *builder { b.u64(uint64(len(s))); b.WriteString(s); return b }

func (b *builder) header(version uint32, nTensors, nKV uint64) *builder {
	b.WriteString("GGUF")
	return b.u32(version).u64(nTensors).u64(nKV)
}

func (b *builder) kvString(k, v string) *builder        { return b.str(k).u32(uint32(String)).str(v) }
func (b *builder) kvUint32(k string, v uint32) *builder { return b.str(k).u32(uint32(Uint32)).u32(v) }

func (b *builder) kvStrings(k string, vs ...string) *builder {
	b.str(k).u32(uint32(Array)).u32(uint32(String)).u64(uint64(len(vs)))
	for _, v := range vs {
		b.str(v)
	}
	return b
}

func (b *builder) kvInt32s(k string, n int) *builder {
	b.str(k).u32(uint32(Array)).u32(uint32(Int32)).u64(uint64(n))
	for range n {
		b.u32(1)
	}
	return b
}

func (b *builder) tensor(name string, typ uint32, offset uint64, dims ...uint64) *builder {
	b.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		b.u64(d)
	}
	return b.u32(typ).u64(offset)
}

// data pads to the 32-byte alignment and appends n bytes of tensor data.
func (b *builder) data(n int) []byte {
	for b.Len()%32 != 0 {
		b.WriteByte(0)
	}
	b.Write(make([]byte, n))
	return b.Bytes()
}

// validFile is a small well-formed model: architecture, a vocabulary of
// three tokens with their types, and two F32 tensors.
func validFile() []byte {
	var b builder
	b.header(3, 2, 4).
		kvString("general.architecture", "llama").
		kvUint32("general.alignment", 32).
		kvStrings("tokenizer.ggml.tokens", "a", "b", "").
		kvInt32s("tokenizer.ggml.token_type", 3).
		tensor("token_embd.weight", 0, 0, 4, 3).
		tensor("output_norm.weight", 0, 64, 4)
	return b.data(64 + 16)
}

func parse(b []byte) (*Header, error) { return Parse(bytes.NewReader(b), int64(len(b))) }

func TestParseValid(t *testing.T) {
	h, err := parse(validFile())
	if err != nil {
		t.Fatal(err)
	}
	if arch, _ := h.String("general.architecture"); arch != "llama" || h.Version != 3 || h.Alignment != 32 {
		t.Errorf("got arch %q version %d alignment %d", arch, h.Version, h.Alignment)
	}
	if toks, ok := h.Strings("tokenizer.ggml.tokens"); !ok || len(toks) != 3 {
		t.Errorf("tokens = %q, %v", toks, ok)
	}
	if len(h.Tensors) != 2 || h.Tensors[0].Bytes != 48 || h.Tensors[1].Offset != 64 || h.DataOffset%32 != 0 {
		t.Errorf("tensors %+v, data at %d", h.Tensors, h.DataOffset)
	}
}

func TestParseGeneratedModels(t *testing.T) {
	for _, arch := range []string{"qwen2", "llama"} {
		t.Run(arch, func(t *testing.T) {
			path := testutil.TinyModel(t, arch)
			f := openFile(t, path)
			h, err := Parse(f, size(t, f))
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := h.String("general.architecture"); got != arch {
				t.Errorf("architecture %q", got)
			}
			if tmpl, _ := h.String("tokenizer.chat_template"); !strings.Contains(tmpl, "<|im_start|>") {
				t.Errorf("chat template %q", tmpl)
			}
			if n, _ := h.Uint(arch + ".block_count"); n != 2 {
				t.Errorf("block_count %d", n)
			}
		})
	}
}

// TestParseTruncated cuts a valid file at every length: each prefix must
// be rejected, none may panic.
func TestParseTruncated(t *testing.T) {
	full := validFile()
	for n := range len(full) {
		if _, err := parse(full[:n]); !errors.Is(err, ErrFormat) {
			t.Fatalf("prefix of %d bytes: err = %v, want ErrFormat", n, err)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	arch := func(b *builder) *builder { return b.kvString("general.architecture", "llama") }
	tests := []struct {
		name string
		file []byte
		want string // part of the error message
	}{
		{"empty", nil, "shorter than its magic"},
		{"zip", []byte("PK\x03\x04 lots of compressed bytes"), "magic number"},
		{"ggml v1 magic", []byte("lmgg\x01\x00\x00\x00"), "magic number"},
		{"gguf v1", new(builder).header(1, 0, 0).data(0), "version 1"},
		{"gguf v4", new(builder).header(4, 0, 0).data(0), "version 4"},
		{"huge tensor count", new(builder).header(3, 1<<60, 0).data(0), "tensors"},
		{"huge kv count", new(builder).header(3, 0, math.MaxUint64).data(0), "metadata entries"},
		{"huge key", new(builder).header(3, 0, 1).u64(1 << 62).data(64), "past the end"},
		{"huge string value", new(builder).header(3, 0, 1).str("k").u32(uint32(String)).u64(1 << 40).data(0), "past the end"},
		{"huge array", new(builder).header(3, 0, 1).str("k").u32(uint32(Array)).u32(uint32(Uint64)).u64(1 << 61).data(0), "past the end"},
		{"huge string array", new(builder).header(3, 0, 1).str("k").u32(uint32(Array)).u32(uint32(String)).u64(1 << 40).data(0), "past the end"},
		{"nested array", new(builder).header(3, 0, 1).str("k").u32(uint32(Array)).u32(uint32(Array)).u64(0).data(0), "not supported"},
		{"unknown value type", new(builder).header(3, 0, 1).str("k").u32(13).data(8), "unknown value type"},
		{"empty key", new(builder).header(3, 0, 1).kvString("", "x").data(0), "empty metadata key"},
		{"duplicate key", arch(new(builder).header(3, 0, 2)).kvString("general.architecture", "x").data(0), "duplicate metadata key"},
		{"alignment string", new(builder).header(3, 0, 1).kvString("general.alignment", "32").data(0), "general.alignment"},
		{"alignment zero", new(builder).header(3, 0, 1).kvUint32("general.alignment", 0).data(0), "general.alignment"},
		{"alignment not power of 2", new(builder).header(3, 0, 1).kvUint32("general.alignment", 48).data(0), "general.alignment"},
		{"five dimensions", arch(new(builder).header(3, 1, 1)).tensor("t", 0, 0, 1, 1, 1, 1, 1).data(4), "dimensions"},
		{"zero dimension", arch(new(builder).header(3, 1, 1)).tensor("t", 0, 0, 4, 0).data(16), "dimension of 0"},
		{"too many elements", arch(new(builder).header(3, 1, 1)).tensor("t", 0, 0, 1<<32, 1<<32).data(0), "too many elements"},
		{"removed type", arch(new(builder).header(3, 1, 1)).tensor("t", 5, 0, 32).data(32), "unknown ggml type 5"},
		{"removed in ggml", arch(new(builder).header(3, 1, 1)).tensor("t", 4, 0, 32).data(32), "unknown ggml type 4"},
		{"type past the end", arch(new(builder).header(3, 1, 1)).tensor("t", 42, 0, 32).data(32), "unknown ggml type 42"},
		{"row not whole blocks", arch(new(builder).header(3, 1, 1)).tensor("t", 12, 0, 100).data(144), "not a multiple of 256"},
		{"long tensor name", arch(new(builder).header(3, 1, 1)).tensor(strings.Repeat("n", 64), 0, 0, 1).data(4), "longer than 63"},
		{"duplicate tensor", arch(new(builder).header(3, 2, 1)).tensor("t", 0, 0, 1).tensor("t", 0, 32, 1).data(64), "duplicate tensor"},
		{"misaligned data", arch(new(builder).header(3, 1, 1)).tensor("t", 0, 4, 1).data(64), "not aligned"},
		{"data past the end", arch(new(builder).header(3, 1, 1)).tensor("t", 0, 0, 1024).data(1000), "truncated"},
		{"offset past the end", arch(new(builder).header(3, 1, 1)).tensor("t", 0, 1<<63, 1).data(4), "truncated"},
		{"no architecture", new(builder).header(3, 0, 0).data(0), "general.architecture"},
		{"split model", arch(new(builder).header(3, 0, 2)).str("split.count").u32(uint32(Uint16)).u32(3).data(0), "split into"},
		{"split count type", arch(new(builder).header(3, 0, 2)).kvUint32("split.count", 1).data(0), "split.count"},
		{"tokens not an array", arch(new(builder).header(3, 0, 2)).kvString("tokenizer.ggml.tokens", "a").data(0), "array of strings"},
		{"tokens of ints", arch(new(builder).header(3, 0, 2)).kvInt32s("tokenizer.ggml.tokens", 2).data(0), "array of strings"},
		{"short token types", arch(new(builder).header(3, 0, 3)).kvStrings("tokenizer.ggml.tokens", "a", "b").kvInt32s("tokenizer.ggml.token_type", 1).data(0), "token_type"},
		{"scores of strings", arch(new(builder).header(3, 0, 3)).kvStrings("tokenizer.ggml.tokens", "a").kvStrings("tokenizer.ggml.scores", "1").data(0), "scores"},
		{"merges of ints", arch(new(builder).header(3, 0, 3)).kvStrings("tokenizer.ggml.tokens", "a").kvInt32s("tokenizer.ggml.merges", 1).data(0), "merges"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(tt.file)
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

// FuzzParse feeds Parse mutations of valid and invalid headers: it must
// never panic or allocate without bound, every error must match ErrFormat,
// and an accepted file must hold all of its tensors.
func FuzzParse(f *testing.F) {
	f.Add(validFile())
	f.Add(new(builder).header(3, 0, 0).data(0))
	f.Add(new(builder).header(2, 1, 1).kvString("general.architecture", "qwen2").tensor("t", 12, 0, 256, 2).data(288))
	f.Add(new(builder).header(3, 0, 2).kvString("general.architecture", "qwen2").kvStrings("tokenizer.ggml.tokens", "x", "", "[EMPTY_1]").data(0))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parse(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not match ErrFormat", err)
			}
			return
		}
		for _, ti := range h.Tensors {
			if uint64(h.DataOffset)+ti.Offset+ti.Bytes > uint64(len(b)) {
				t.Fatalf("accepted tensor %q past the end", ti.Name)
			}
		}
		if _, err := h.Check(); err != nil && !errors.Is(err, ErrFormat) {
			t.Fatalf("Check: error %v does not match ErrFormat", err)
		}
	})
}

func openFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func size(t *testing.T, f *os.File) int64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
