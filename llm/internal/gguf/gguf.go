// Package gguf reads and checks the header of a GGUF model file in pure Go,
// before llama.cpp sees it.
//
// llama.cpp rejects most malformed files with an error, but some inputs
// reach a GGML_ASSERT (abort) or a division by zero and kill the process:
// an alignment that is not a uint32, a zero dimension, a vocabulary that is
// not an array of strings or has duplicate entries, token types shorter
// than the vocabulary. [Parse] rejects all of these, and anything that does
// not fit in the file, with an error instead.
package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// ErrFormat is matched by every error [Parse] returns for a file that is
// not a valid GGUF model.
var ErrFormat = errors.New("not a valid GGUF model")

// Error reports what is wrong with a file and where.
type Error struct {
	Offset int64  // byte offset in the file where the problem was found; -1 for the model's meaning
	Msg    string // what is wrong
}

func (e *Error) Error() string {
	if e.Offset < 0 {
		return "gguf: " + e.Msg
	}
	return fmt.Sprintf("gguf: %s (at byte %d)", e.Msg, e.Offset)
}

// Is reports whether target is [ErrFormat].
func (e *Error) Is(target error) bool { return target == ErrFormat }

// Type is a GGUF metadata value type.
type Type uint32

// The GGUF metadata value types.
const (
	Uint8 Type = iota
	Int8
	Uint16
	Int16
	Uint32
	Int32
	Float32
	Bool
	String
	Array
	Uint64
	Int64
	Float64
	numTypes
)

var typeSize = [numTypes]int64{1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8}

// Value is one metadata value. Scalars, the vocabulary and numeric arrays
// of up to maxKeptNumbers elements keep their contents; other arrays keep
// only their element type and length.
type Value struct {
	Type     Type
	ElemType Type   // for arrays
	Len      uint64 // for arrays
	scalar   any    // uint64, int64, float64, bool or string
	strings  []string
	numbers  []float64 // a numeric array's elements, if kept
}

// maxKeptNumbers bounds the numeric arrays Parse keeps: per-layer
// hyperparameters have at most 512 elements (llama.cpp's LLAMA_MAX_LAYERS).
const maxKeptNumbers = 4096

// Header is the parsed start of a GGUF file.
type Header struct {
	Version    uint32
	Alignment  uint64
	KV         map[string]Value
	Tensors    []TensorInfo
	DataOffset int64 // where the tensor data section starts
	Size       int64 // the file size Parse was given
}

// TensorInfo describes one tensor.
type TensorInfo struct {
	Name   string
	Dims   []uint64
	Type   uint32 // ggml_type
	Offset uint64 // relative to Header.DataOffset
	Bytes  uint64 // size of the data
}

// String returns the value of a string key.
func (h *Header) String(key string) (string, bool) {
	s, ok := h.KV[key].scalar.(string)
	return s, ok
}

// Uint returns the value of an unsigned or non-negative integer key.
func (h *Header) Uint(key string) (uint64, bool) {
	switch v := h.KV[key].scalar.(type) {
	case uint64:
		return v, true
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

// Strings returns the contents of a string array key.
func (h *Header) Strings(key string) ([]string, bool) {
	v, ok := h.KV[key]
	return v.strings, ok && v.Type == Array && v.ElemType == String
}

// Limits that keep a hostile header from making Parse allocate or loop
// more than the file's size justifies.
const (
	maxNameLen  = 63 // llama.cpp's GGML_MAX_NAME - 1
	maxDims     = 4  // GGML_MAX_DIMS
	maxKeyLen   = 1 << 16
	minKVBytes  = 8 + 1 + 4 // key length, 1-byte key, type
	minTensorBy = 8 + 1 + 4 + 4 + 8
)

// Parse reads and checks the header of the GGUF file r of the given size.
// It reads only the header: metadata and tensor descriptions, not the
// tensor data. Every error it returns matches [ErrFormat], except errors
// reading r.
func Parse(r io.ReaderAt, size int64) (*Header, error) {
	d := &decoder{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<16), size: size}
	h, err := d.header()
	if err != nil {
		return nil, err
	}
	if err := h.checkLlama(); err != nil {
		return nil, err
	}
	return h, nil
}

type decoder struct {
	r    *bufio.Reader
	off  int64
	size int64
	buf  [8]byte
}

// errorf returns a format error at the current offset.
func (d *decoder) errorf(format string, args ...any) error {
	return &Error{Offset: d.off, Msg: fmt.Sprintf(format, args...)}
}

func (d *decoder) remaining() int64 { return d.size - d.off }

func (d *decoder) read(n int) ([]byte, error) {
	if int64(n) > d.remaining() {
		return nil, d.errorf("file ends after %d bytes: truncated", d.size)
	}
	if _, err := io.ReadFull(d.r, d.buf[:n]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, d.errorf("file ends early: truncated")
		}
		return nil, err
	}
	d.off += int64(n)
	return d.buf[:n], nil
}

func (d *decoder) u32() (uint32, error) {
	b, err := d.read(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64() (uint64, error) {
	b, err := d.read(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// str reads a length-prefixed string of at most max bytes.
func (d *decoder) str(what string, max int64) (string, error) {
	n, err := d.u64()
	if err != nil {
		return "", err
	}
	if n > uint64(d.remaining()) {
		return "", d.errorf("%s of %d bytes runs past the end of the file", what, n)
	}
	if n > uint64(max) {
		return "", d.errorf("%s of %d bytes is longer than %d", what, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		return "", d.errorf("file ends early: truncated")
	}
	d.off += int64(n)
	return string(b), nil
}

func (d *decoder) skip(n int64) error {
	if n > d.remaining() {
		return d.errorf("value of %d bytes runs past the end of the file", n)
	}
	if _, err := d.r.Discard(int(n)); err != nil {
		return d.errorf("file ends early: truncated")
	}
	d.off += n
	return nil
}

func (d *decoder) header() (*Header, error) {
	magic, err := d.read(4)
	if err != nil {
		return nil, d.errorf("not a GGUF file: shorter than its magic number")
	}
	if string(magic) != "GGUF" {
		return nil, d.errorf("not a GGUF file: magic number %q, want \"GGUF\"", magic)
	}
	h := &Header{Size: d.size, Alignment: 32, KV: map[string]Value{}}
	if h.Version, err = d.u32(); err != nil {
		return nil, err
	}
	if h.Version != 2 && h.Version != 3 {
		return nil, d.errorf("GGUF version %d is not supported (llama.cpp reads 2 and 3)", h.Version)
	}
	nTensors, err := d.u64()
	if err != nil {
		return nil, err
	}
	nKV, err := d.u64()
	if err != nil {
		return nil, err
	}
	// Each entry takes some bytes: counts the file cannot hold are lies.
	if nTensors > uint64(d.remaining()/minTensorBy) {
		return nil, d.errorf("header claims %d tensors, more than the file can describe", nTensors)
	}
	if nKV > uint64(d.remaining()/minKVBytes) {
		return nil, d.errorf("header claims %d metadata entries, more than the file can hold", nKV)
	}
	for range nKV {
		if err := d.kv(h); err != nil {
			return nil, err
		}
	}
	if v, ok := h.KV["general.alignment"]; ok {
		// llama.cpp reads it with gguf_get_val_u32, which asserts the type.
		// ggml's buffers assert an alignment of at least 8.
		a, _ := v.scalar.(uint64)
		if v.Type != Uint32 || a < 8 || a&(a-1) != 0 {
			return nil, d.errorf("general.alignment is %s, llama.cpp needs a uint32 power of two of at least 8 (32 is usual)", v)
		}
		h.Alignment = a
	}
	names := make(map[string]bool, nTensors)
	for range nTensors {
		t, err := d.tensor()
		if err != nil {
			return nil, err
		}
		if names[t.Name] {
			return nil, d.errorf("duplicate tensor %q", t.Name)
		}
		names[t.Name] = true
		h.Tensors = append(h.Tensors, t)
	}
	h.DataOffset = int64(alignUp(uint64(d.off), h.Alignment))
	for _, t := range h.Tensors {
		if t.Offset%h.Alignment != 0 {
			return nil, &Error{Offset: d.off, Msg: fmt.Sprintf("tensor %q data offset %d is not aligned to %d", t.Name, t.Offset, h.Alignment)}
		}
		end, carry := bits.Add64(uint64(h.DataOffset)+t.Offset, t.Bytes, 0)
		if carry != 0 || t.Offset > uint64(d.size) || end > uint64(d.size) {
			return nil, &Error{Offset: d.off, Msg: fmt.Sprintf(
				"tensor %q (%d bytes at %d) ends past the end of the %d-byte file: truncated",
				t.Name, t.Bytes, uint64(h.DataOffset)+t.Offset, d.size)}
		}
	}
	return h, nil
}

func (d *decoder) kv(h *Header) error {
	key, err := d.str("metadata key", maxKeyLen)
	if err != nil {
		return err
	}
	if key == "" {
		return d.errorf("empty metadata key")
	}
	if strings.IndexByte(key, 0) >= 0 {
		// llama.cpp finds keys as C strings: this one would answer for
		// the key before its NUL.
		return d.errorf("metadata key %q holds a NUL byte", key)
	}
	if _, dup := h.KV[key]; dup {
		return d.errorf("duplicate metadata key %q", key)
	}
	t, err := d.u32()
	if err != nil {
		return err
	}
	v := Value{Type: Type(t)}
	switch {
	case v.Type == Array:
		et, err := d.u32()
		if err != nil {
			return err
		}
		v.ElemType = Type(et)
		if v.ElemType >= numTypes || v.ElemType == Array {
			return d.errorf("key %q: array of type %d is not supported", key, et)
		}
		if v.Len, err = d.u64(); err != nil {
			return err
		}
		if err := d.array(key, &v); err != nil {
			return err
		}
	case v.Type < numTypes:
		if v.scalar, err = d.scalar(key, v.Type); err != nil {
			return err
		}
	default:
		return d.errorf("key %q: unknown value type %d", key, t)
	}
	h.KV[key] = v
	return nil
}

func (d *decoder) scalar(key string, t Type) (any, error) {
	if t == String {
		return d.str("value of "+strconv.Quote(key), d.remaining())
	}
	b, err := d.read(int(typeSize[t]))
	if err != nil {
		return nil, err
	}
	switch t {
	case Uint8:
		return uint64(b[0]), nil
	case Int8:
		return int64(int8(b[0])), nil
	case Uint16:
		return uint64(binary.LittleEndian.Uint16(b)), nil
	case Int16:
		return int64(int16(binary.LittleEndian.Uint16(b))), nil
	case Uint32:
		return uint64(binary.LittleEndian.Uint32(b)), nil
	case Int32:
		return int64(int32(binary.LittleEndian.Uint32(b))), nil
	case Uint64:
		return binary.LittleEndian.Uint64(b), nil
	case Int64:
		return int64(binary.LittleEndian.Uint64(b)), nil
	case Float32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), nil
	case Float64:
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
	case Bool:
		return b[0] != 0, nil
	}
	return nil, d.errorf("key %q: unknown value type %d", key, t)
}

// keepStrings names the string arrays whose contents are checked.
var keepStrings = map[string]bool{"tokenizer.ggml.tokens": true}

func (d *decoder) array(key string, v *Value) error {
	if v.ElemType != String {
		hi, n := bits.Mul64(v.Len, uint64(typeSize[v.ElemType]))
		if hi != 0 || n > uint64(d.remaining()) {
			return d.errorf("key %q: array of %d elements runs past the end of the file", key, v.Len)
		}
		if v.Len > maxKeptNumbers || v.ElemType == Bool {
			return d.skip(int64(n))
		}
		v.numbers = make([]float64, 0, v.Len)
		for range v.Len {
			x, err := d.scalar(key, v.ElemType)
			if err != nil {
				return err
			}
			v.numbers = append(v.numbers, toFloat(x))
		}
		return nil
	}
	if v.Len > uint64(d.remaining()/8) {
		return d.errorf("key %q: array of %d strings runs past the end of the file", key, v.Len)
	}
	keep := keepStrings[key]
	if keep {
		v.strings = make([]string, 0, v.Len)
	}
	for range v.Len {
		if !keep {
			n, err := d.u64()
			if err != nil {
				return err
			}
			if n > uint64(d.remaining()) {
				return d.errorf("key %q: string of %d bytes runs past the end of the file", key, n)
			}
			if err := d.skip(int64(n)); err != nil {
				return err
			}
			continue
		}
		s, err := d.str("element of "+strconv.Quote(key), d.remaining())
		if err != nil {
			return err
		}
		v.strings = append(v.strings, s)
	}
	return nil
}

func (d *decoder) tensor() (TensorInfo, error) {
	var t TensorInfo
	var err error
	if t.Name, err = d.str("tensor name", maxNameLen); err != nil {
		return t, err
	}
	if strings.IndexByte(t.Name, 0) >= 0 {
		// llama.cpp copies names as C strings: this one would be the
		// name before its NUL.
		return t, d.errorf("tensor name %q holds a NUL byte", t.Name)
	}
	nDims, err := d.u32()
	if err != nil {
		return t, err
	}
	if nDims > maxDims {
		return t, d.errorf("tensor %q has %d dimensions, at most %d are allowed", t.Name, nDims, maxDims)
	}
	elems := uint64(1)
	for range nDims {
		n, err := d.u64()
		if err != nil {
			return t, err
		}
		// A zero dimension makes llama.cpp divide by zero; a product past
		// INT64_MAX is rejected by it too.
		if n == 0 || n > math.MaxInt64 {
			return t, d.errorf("tensor %q has a dimension of %d", t.Name, n)
		}
		hi, lo := bits.Mul64(elems, n)
		if hi != 0 || lo > math.MaxInt64 {
			return t, d.errorf("tensor %q has too many elements", t.Name)
		}
		elems = lo
		t.Dims = append(t.Dims, n)
	}
	if t.Type, err = d.u32(); err != nil {
		return t, err
	}
	tt, ok := tensorTypes[t.Type]
	if !ok {
		return t, d.errorf("tensor %q has unknown ggml type %d", t.Name, t.Type)
	}
	rowLen := uint64(1)
	if nDims > 0 {
		rowLen = t.Dims[0]
	}
	if rowLen%tt.block != 0 {
		return t, d.errorf("tensor %q of type %s has rows of %d elements, not a multiple of %d", t.Name, tt.name, rowLen, tt.block)
	}
	hi, lo := bits.Mul64(elems/tt.block, tt.bytes)
	if hi != 0 {
		return t, d.errorf("tensor %q is too large", t.Name)
	}
	t.Bytes = lo
	if t.Offset, err = d.u64(); err != nil {
		return t, err
	}
	return t, nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// checkLlama rejects metadata that llama.cpp (the version vendored by
// ollama v0.11.4) reads with assertions rather than checks.
func (h *Header) checkLlama() error {
	bad := func(format string, args ...any) error {
		return &Error{Offset: 0, Msg: fmt.Sprintf(format, args...)}
	}
	arch, ok := h.String("general.architecture")
	if !ok || arch == "" {
		return bad("no general.architecture string: not a model")
	}
	if v, ok := h.KV["split.count"]; ok {
		n, _ := v.scalar.(uint64)
		if v.Type != Uint16 {
			return bad("split.count is not a uint16")
		}
		if n > 1 {
			return bad("the model is split into %d files; merge them into one (llama-gguf-split --merge)", n)
		}
	}
	tokens, hasTokens := h.KV["tokenizer.ggml.tokens"]
	if !hasTokens {
		return nil // llama.cpp reports the missing vocabulary itself
	}
	if tokens.Type != Array || tokens.ElemType != String {
		return bad("tokenizer.ggml.tokens is not an array of strings")
	}
	// These are read as raw arrays of the vocabulary's length.
	for key, want := range map[string]Type{"tokenizer.ggml.scores": Float32, "tokenizer.ggml.token_type": Int32} {
		if v, ok := h.KV[key]; ok && (v.Type != Array || v.ElemType != want || v.Len < tokens.Len) {
			return bad("%s must be an array of %d %s values", key, tokens.Len, want)
		}
	}
	if v, ok := h.KV["tokenizer.ggml.merges"]; ok && (v.Type != Array || v.ElemType != String) {
		return bad("tokenizer.ggml.merges is not an array of strings")
	}
	return nil
}

// TensorTypes calls fn with each ggml type the parser accepts: its id,
// name, elements per block and bytes per block (for tests against ggml).
func TensorTypes(fn func(id uint32, name string, block, bytes uint64)) {
	for id, t := range tensorTypes {
		fn(id, t.name, t.block, t.bytes)
	}
}

type tensorType struct {
	name  string
	block uint64 // elements per block
	bytes uint64 // bytes per block
}

// tensorTypes are the ggml types llama.cpp can read from a file, with the
// sizes of ggml's type_traits, as in llama.cpp v0.5.0 (llm's
// TestTensorTypeSizes checks them against the library).
var tensorTypes = map[uint32]tensorType{
	0: {"F32", 1, 4}, 1: {"F16", 1, 2}, 2: {"Q4_0", 32, 18}, 3: {"Q4_1", 32, 20},
	6: {"Q5_0", 32, 22}, 7: {"Q5_1", 32, 24}, 8: {"Q8_0", 32, 34},
	9: {"Q8_1", 32, 36}, 10: {"Q2_K", 256, 84}, 11: {"Q3_K", 256, 110}, 12: {"Q4_K", 256, 144},
	13: {"Q5_K", 256, 176}, 14: {"Q6_K", 256, 210}, 15: {"Q8_K", 256, 292},
	16: {"IQ2_XXS", 256, 66}, 17: {"IQ2_XS", 256, 74}, 18: {"IQ3_XXS", 256, 98},
	19: {"IQ1_S", 256, 50}, 20: {"IQ4_NL", 32, 18}, 21: {"IQ3_S", 256, 110},
	22: {"IQ2_S", 256, 82}, 23: {"IQ4_XS", 256, 136}, 24: {"I8", 1, 1}, 25: {"I16", 1, 2},
	26: {"I32", 1, 4}, 27: {"I64", 1, 8}, 28: {"F64", 1, 8}, 29: {"IQ1_M", 256, 56},
	30: {"BF16", 1, 2}, 34: {"TQ1_0", 256, 54}, 35: {"TQ2_0", 256, 66},
	39: {"MXFP4", 32, 17}, 40: {"NVFP4", 64, 36}, 41: {"Q1_0", 128, 18},
}

func toFloat(x any) float64 {
	switch x := x.(type) {
	case uint64:
		return float64(x)
	case int64:
		return float64(x)
	case float64:
		return x
	}
	return math.NaN()
}

// String describes the value for an error message: its type and, for a
// scalar, what it holds.
func (v Value) String() string {
	switch {
	case v.Type == Array:
		return fmt.Sprintf("an array of %d %s", v.Len, v.ElemType)
	case v.Type == String:
		return fmt.Sprintf("the string %q", v.scalar)
	case v.scalar == nil:
		return "missing"
	}
	return fmt.Sprintf("%v (%s)", v.scalar, v.Type)
}

func (t Type) String() string {
	names := [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}
	if t < numTypes {
		return names[t]
	}
	return "type " + strconv.Itoa(int(t))
}
