package testutil

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// Chat templates as found in the tokenizer.chat_template of published models
// (abridged where they handle tools). The generated models carry one of them
// so that the llm package detects their family as it would for a real model.
const (
	// ChatMLTemplate is Qwen2's template.
	ChatMLTemplate = `{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful assistant.<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}`

	// DeepSeekR1Template is DeepSeek-R1-Distill-Qwen's template, without
	// its tool-call branches.
	DeepSeekR1Template = `{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor -%}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}{% endif %}`

	// Llama3Template is Llama 3 Instruct's template.
	Llama3Template = `{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}`
)

// ModelConfig describes a random-weight model for [WriteModel]. The weights
// are noise, so the model babbles, but its shapes, tensor types, vocabulary
// and metadata are those of a real one: llama.cpp loads and runs it at the
// speed it would run the real thing.
type ModelConfig struct {
	Name        string // general.name
	Arch        string // "qwen2" (with q/k/v biases) or "llama"
	Embedding   int    // n_embd, a multiple of 256 when Quant is Q4KM
	FeedForward int    // n_ff, a multiple of 256 when Quant is Q4KM
	Layers      int
	Heads       int
	KVHeads     int
	Vocab       int // tokens, including the byte tokens and the special tokens
	Context     int // the training context length written to the metadata
	Quant       Quant
	Template    string // tokenizer.chat_template; ChatMLTemplate if empty
	Seed        uint64 // the same Seed gives the same file
}

// Quant is how a generated model's weight matrices are stored.
type Quant int

const (
	// F32 stores every tensor as float32: small models, exact arithmetic.
	F32 Quant = iota
	// Q4KM follows llama.cpp's Q4_K_M recipe: Q4_K matrices, with Q6_K for
	// the output, and for attn_v and ffn_down in the layers it favours.
	Q4KM
)

// TinyConfig returns the configuration of a model with a few hundred
// thousand parameters, for tests: it loads in milliseconds and generates
// thousands of tokens a second. arch is "qwen2" or "llama".
func TinyConfig(arch string) ModelConfig {
	return ModelConfig{
		Name: "tiny-" + arch, Arch: arch,
		Embedding: 64, FeedForward: 128, Layers: 2, Heads: 4, KVHeads: 2,
		Vocab: 1024, Context: 2048, Quant: F32, Seed: 1,
	}
}

// BenchConfig returns the shape of DeepSeek-R1-Distill-Qwen-1.5B quantised
// to Q4_K_M (a 1.1 GB file), with that model's chat template.
func BenchConfig() ModelConfig {
	return ModelConfig{
		Name: "DeepSeek-R1-Distill-Qwen-1.5B-shaped random weights", Arch: "qwen2",
		Embedding: 1536, FeedForward: 8960, Layers: 28, Heads: 12, KVHeads: 2,
		Vocab: 151936, Context: 131072, Quant: Q4KM, Template: DeepSeekR1Template, Seed: 1,
	}
}

// TinyModel writes a tiny model of the given architecture ("qwen2" or
// "llama") with the ChatML template into a temporary directory of tb and
// returns its path.
func TinyModel(tb testing.TB, arch string) string {
	tb.Helper()
	return TinyModelWith(tb, TinyConfig(arch))
}

// TinyModelWith writes the model cfg describes into a temporary directory of
// tb and returns its path.
func TinyModelWith(tb testing.TB, cfg ModelConfig) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), cfg.Arch+".gguf")
	if err := WriteModel(path, cfg); err != nil {
		tb.Fatal(err)
	}
	return path
}

// BenchModelVersion changes whenever the generator's output for
// [BenchConfig] changes, so that a stale cached file is not reused.
const BenchModelVersion = 1

// BenchModel returns the path of the [BenchConfig] model in .cache/models of
// the repository, generating it first if it is missing (about 1.1 GB, a few
// seconds to a minute depending on the disk).
func BenchModel(ctx context.Context) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ".cache", "models")
	path := filepath.Join(dir, fmt.Sprintf("deepseek-r1-distill-qwen-1.5b-shape-q4_k_m-v%d.gguf", BenchModelVersion))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return path, WriteModel(path, BenchConfig())
}

// WriteModel writes the model cfg describes to path, atomically: the file
// appears complete or not at all.
func WriteModel(path string, cfg ModelConfig) (err error) {
	if err := cfg.check(); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err = writeGGUF(w, cfg.metadata(), cfg.tensors()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = w.Flush(); err != nil {
		return err
	}
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func (c ModelConfig) check() error {
	switch {
	case c.Arch != "qwen2" && c.Arch != "llama":
		return fmt.Errorf("testutil: unsupported architecture %q", c.Arch)
	case c.Heads <= 0 || c.KVHeads <= 0 || c.Heads%c.KVHeads != 0 || c.Embedding%c.Heads != 0:
		return fmt.Errorf("testutil: %d heads, %d kv heads and n_embd %d do not fit", c.Heads, c.KVHeads, c.Embedding)
	case c.Quant == Q4KM && (c.Embedding%256 != 0 || c.FeedForward%256 != 0):
		return fmt.Errorf("testutil: Q4_K needs n_embd and n_ff to be multiples of 256")
	case c.Vocab < 256+len(specialTokens)+16:
		return fmt.Errorf("testutil: a vocabulary of %d tokens is too small", c.Vocab)
	case c.Layers <= 0 || c.FeedForward <= 0:
		return fmt.Errorf("testutil: bad shape")
	}
	return nil
}

// specialTokens are appended to every generated vocabulary, so that the
// prompt of any of the three template families tokenizes as it would with
// the real model.
var specialTokens = []struct {
	text string
	typ  int32 // 3 control, 4 user-defined
}{
	{"<|endoftext|>", 3}, {"<|im_start|>", 3}, {"<|im_end|>", 3},
	{"<｜begin▁of▁sentence｜>", 3}, {"<｜end▁of▁sentence｜>", 3},
	{"<｜User｜>", 4}, {"<｜Assistant｜>", 4}, {"<think>", 4}, {"</think>", 4},
	{"<|begin_of_text|>", 3}, {"<|end_of_text|>", 3},
	{"<|start_header_id|>", 3}, {"<|end_header_id|>", 3}, {"<|eot_id|>", 3},
}

// vocabulary returns the tokens, their types and the BPE merges: the 256
// byte tokens of GPT-2's byte-level encoding, then tokens merged from common
// characters until the vocabulary is full, then specialTokens. Every token
// string is unique, as llama.cpp requires.
func vocabulary(n int) (tokens []string, types []int32, merges []string) {
	byteChar := gpt2ByteChars()
	seen := make(map[string]bool, n)
	add := func(s string, typ int32) {
		seen[s] = true
		tokens = append(tokens, s)
		types = append(types, typ)
	}
	for b := range 256 {
		add(byteChar[b], 1)
	}
	var base []string
	for _, c := range []byte(" etaoinsrhldcumfpgwybvkxjqzETAOINSRHLDCUMFPGWYBVKXJQZ0123456789.,'-\n") {
		base = append(base, byteChar[c])
	}
	normal := n - len(specialTokens)
	// Breadth first: every merge joins two existing tokens, so the BPE
	// merges are consistent and common words become single tokens.
	grow := append([]string(nil), base...)
	for k := 0; len(tokens) < normal; k++ {
		for _, b := range base {
			if len(tokens) == normal {
				break
			}
			s := grow[k] + b
			if seen[s] {
				continue
			}
			add(s, 1)
			merges = append(merges, grow[k]+" "+b)
			grow = append(grow, s)
		}
	}
	for _, s := range specialTokens {
		add(s.text, s.typ)
	}
	return tokens, types, merges
}

// gpt2ByteChars is GPT-2's bytes_to_unicode: printable bytes stand for
// themselves, the others are shifted to U+0100 and up ("Ġ" is the space).
func gpt2ByteChars() [256]string {
	var out [256]string
	next := 256
	for b := range 256 {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			out[b] = string(rune(b))
		} else {
			out[b] = string(rune(next))
			next++
		}
	}
	return out
}

func tokenID(tokens []string, s string) uint32 {
	for i := len(tokens) - 1; i >= 0; i-- {
		if tokens[i] == s {
			return uint32(i)
		}
	}
	panic("testutil: no token " + s)
}

func (c ModelConfig) metadata() []kv {
	template := c.Template
	if template == "" {
		template = ChatMLTemplate
	}
	tokens, types, merges := vocabulary(c.Vocab)
	// Special tokens and pre-tokenizer as in the real models of each family.
	bos, eos, pre, addBOS := "<|endoftext|>", "<|im_end|>", "qwen2", false
	switch {
	case strings.Contains(template, "<｜User｜>"):
		bos, eos, pre, addBOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "deepseek-r1-qwen", true
	case strings.Contains(template, "<|start_header_id|>"):
		bos, eos, pre, addBOS = "<|begin_of_text|>", "<|eot_id|>", "llama-bpe", true
	}
	fileType := uint32(0) // LLAMA_FTYPE_ALL_F32
	if c.Quant == Q4KM {
		fileType = 15 // LLAMA_FTYPE_MOSTLY_Q4_K_M
	}
	a := c.Arch + "."
	return []kv{
		{"general.architecture", c.Arch},
		{"general.name", c.Name},
		{"general.file_type", fileType},
		{"general.quantization_version", uint32(2)},
		{a + "context_length", uint32(c.Context)},
		{a + "embedding_length", uint32(c.Embedding)},
		{a + "block_count", uint32(c.Layers)},
		{a + "feed_forward_length", uint32(c.FeedForward)},
		{a + "attention.head_count", uint32(c.Heads)},
		{a + "attention.head_count_kv", uint32(c.KVHeads)},
		{a + "attention.layer_norm_rms_epsilon", float32(1e-6)},
		{a + "rope.freq_base", float32(10000)},
		{a + "rope.dimension_count", uint32(c.Embedding / c.Heads)},
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.pre", pre},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.merges", merges},
		{"tokenizer.ggml.bos_token_id", tokenID(tokens, bos)},
		{"tokenizer.ggml.eos_token_id", tokenID(tokens, eos)},
		{"tokenizer.ggml.padding_token_id", tokenID(tokens, "<|endoftext|>")},
		{"tokenizer.ggml.add_bos_token", addBOS},
		{"tokenizer.ggml.add_eos_token", false},
		{"tokenizer.chat_template", template},
	}
}

// GGML tensor types used here, with their block sizes in elements and bytes.
const (
	typeF32 = 0
	typeQ4K = 12
	typeQ6K = 14
)

type tensor struct {
	name string
	dims []uint64
	typ  uint32
	fill func(rng *mrand.ChaCha8, p []byte) // fills a whole number of rows
}

func (t tensor) size() uint64 {
	n := uint64(1)
	for _, d := range t.dims {
		n *= d
	}
	switch t.typ {
	case typeQ4K:
		return n / 256 * 144
	case typeQ6K:
		return n / 256 * 210
	}
	return n * 4
}

func (c ModelConfig) tensors() []tensor {
	nEmbd, nFF, nVocab := uint64(c.Embedding), uint64(c.FeedForward), uint64(c.Vocab)
	nKV := nEmbd / uint64(c.Heads) * uint64(c.KVHeads)
	matrix := func(name string, in, out uint64, q6 bool) tensor {
		// Uniform in ±sqrt(3/in): unit variance for unit-variance inputs,
		// so that activations stay finite through any number of layers.
		amp := float32(math.Sqrt(3 / float64(in)))
		t := tensor{name: name, dims: []uint64{in, out}}
		switch {
		case c.Quant == F32:
			t.typ, t.fill = typeF32, uniformF32(amp)
		case q6:
			t.typ, t.fill = typeQ6K, uniformQ6K(amp)
		default:
			t.typ, t.fill = typeQ4K, uniformQ4K(amp)
		}
		return t
	}
	vector := func(name string, n uint64, value float32) tensor {
		return tensor{name: name, dims: []uint64{n}, typ: typeF32, fill: constF32(value)}
	}
	ts := []tensor{
		matrix("token_embd.weight", nEmbd, nVocab, false),
		vector("output_norm.weight", nEmbd, 1),
		matrix("output.weight", nEmbd, nVocab, true),
	}
	n := c.Layers
	for i := range n {
		// llama.cpp's use_more_bits: Q4_K_M spends Q6_K on these layers.
		more := i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
		p := fmt.Sprintf("blk.%d.", i)
		ts = append(ts,
			vector(p+"attn_norm.weight", nEmbd, 1),
			matrix(p+"attn_q.weight", nEmbd, nEmbd, false),
			matrix(p+"attn_k.weight", nEmbd, nKV, false),
			matrix(p+"attn_v.weight", nEmbd, nKV, more),
			matrix(p+"attn_output.weight", nEmbd, nEmbd, false),
			vector(p+"ffn_norm.weight", nEmbd, 1),
			matrix(p+"ffn_gate.weight", nEmbd, nFF, false),
			matrix(p+"ffn_up.weight", nEmbd, nFF, false),
			matrix(p+"ffn_down.weight", nFF, nEmbd, more),
		)
		if c.Arch == "qwen2" {
			ts = append(ts,
				vector(p+"attn_q.bias", nEmbd, 0),
				vector(p+"attn_k.bias", nKV, 0),
				vector(p+"attn_v.bias", nKV, 0),
			)
		}
	}
	return ts
}

func constF32(v float32) func(*mrand.ChaCha8, []byte) {
	return func(_ *mrand.ChaCha8, p []byte) {
		for i := 0; i < len(p); i += 4 {
			binary.LittleEndian.PutUint32(p[i:], math.Float32bits(v))
		}
	}
}

func uniformF32(amp float32) func(*mrand.ChaCha8, []byte) {
	return func(rng *mrand.ChaCha8, p []byte) {
		for i := 0; i < len(p); i += 4 {
			u := float32(rng.Uint64()>>40) / (1 << 24) // [0, 1)
			binary.LittleEndian.PutUint32(p[i:], math.Float32bits((2*u-1)*amp))
		}
	}
}

// uniformQ4K fills Q4_K blocks (d, dmin as f16, 12 bytes of 6-bit scales
// and mins, 128 bytes of 4-bit quants) with random quants, every scale and
// min set to 1: each weight is d*q - dmin, uniform in [-amp, amp].
func uniformQ4K(amp float32) func(*mrand.ChaCha8, []byte) {
	d, dmin := f16(2*amp/15), f16(amp)
	return func(rng *mrand.ChaCha8, p []byte) {
		_, _ = rng.Read(p)
		for b := 0; b < len(p); b += 144 {
			binary.LittleEndian.PutUint16(p[b:], d)
			binary.LittleEndian.PutUint16(p[b+2:], dmin)
			s := p[b+4 : b+16]
			for j := range 8 {
				s[j] = 1
			}
			for j := 8; j < 12; j++ {
				s[j] = 0x11
			}
		}
	}
}

// uniformQ6K fills Q6_K blocks (128 bytes of low and 64 of high quant bits,
// 16 int8 scales, d as f16) with random quants and scales of 1: each weight
// is d*(q-32), uniform in [-amp, amp).
func uniformQ6K(amp float32) func(*mrand.ChaCha8, []byte) {
	d := f16(amp / 32)
	return func(rng *mrand.ChaCha8, p []byte) {
		_, _ = rng.Read(p)
		for b := 0; b < len(p); b += 210 {
			s := p[b+192 : b+208]
			for j := range s {
				s[j] = 1
			}
			binary.LittleEndian.PutUint16(p[b+208:], d)
		}
	}
}

// f16 converts a normal, positive float32 to IEEE half precision,
// truncating the mantissa.
func f16(v float32) uint16 {
	bits := math.Float32bits(v)
	exp := int((bits>>23)&0xff) - 127 + 15
	if exp <= 0 || exp >= 31 {
		panic(fmt.Sprintf("testutil: %g is out of half-precision range", v))
	}
	return uint16(exp)<<10 | uint16(bits>>13&0x3ff)
}

// A kv is one metadata entry. Values are string, uint32, float32, bool,
// []string or []int32: all the generator needs.
type kv struct {
	key   string
	value any
}

const ggufAlignment = 32

// writeGGUF writes a GGUF v3 file: header, metadata, tensor infos, then
// the tensors' data, each padded to the alignment. Tensor data is generated
// a row block at a time, so a 1 GB model needs a few MB of memory.
func writeGGUF(w io.Writer, kvs []kv, ts []tensor) error {
	e := &encoder{w: w}
	e.raw([]byte("GGUF"))
	e.u32(3)
	e.u64(uint64(len(ts)))
	e.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		e.str(kv.key)
		e.value(kv.value)
	}
	var offset uint64
	for _, t := range ts {
		e.str(t.name)
		e.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			e.u64(d)
		}
		e.u32(t.typ)
		e.u64(offset)
		offset += pad(t.size())
	}
	e.raw(make([]byte, pad(e.n)-e.n))
	// One stream per tensor: regenerating a model with more layers does
	// not change the existing tensors.
	var seed [32]byte
	buf := make([]byte, 4<<20)
	for i, t := range ts {
		binary.LittleEndian.PutUint64(seed[:], uint64(i))
		rng := mrand.NewChaCha8(seed)
		size := t.size()
		rowBytes := size / t.dims[len(t.dims)-1]
		chunk := max(rowBytes, uint64(len(buf))/rowBytes*rowBytes)
		for done := uint64(0); done < size; {
			n := min(chunk, size-done)
			if n > uint64(len(buf)) {
				buf = make([]byte, n)
			}
			t.fill(rng, buf[:n])
			e.raw(buf[:n])
			done += n
		}
		e.raw(make([]byte, pad(size)-size))
	}
	return e.err
}

func pad(n uint64) uint64 { return (n + ggufAlignment - 1) / ggufAlignment * ggufAlignment }

type encoder struct {
	w   io.Writer
	n   uint64
	err error
	b   [8]byte
}

func (e *encoder) raw(p []byte) {
	if e.err != nil {
		return
	}
	_, e.err = e.w.Write(p)
	e.n += uint64(len(p))
}

func (e *encoder) u32(v uint32) { binary.LittleEndian.PutUint32(e.b[:], v); e.raw(e.b[:4]) }
func (e *encoder) u64(v uint64) { binary.LittleEndian.PutUint64(e.b[:], v); e.raw(e.b[:8]) }

func (e *encoder) str(s string) {
	if !utf8.ValidString(s) {
		e.err = fmt.Errorf("testutil: %q is not UTF-8", s)
	}
	e.u64(uint64(len(s)))
	e.raw([]byte(s))
}

// GGUF value types.
const (
	ggufUint32  = 4
	ggufInt32   = 5
	ggufFloat32 = 6
	ggufBool    = 7
	ggufString  = 8
	ggufArray   = 9
)

func (e *encoder) value(v any) {
	switch v := v.(type) {
	case string:
		e.u32(ggufString)
		e.str(v)
	case uint32:
		e.u32(ggufUint32)
		e.u32(v)
	case float32:
		e.u32(ggufFloat32)
		e.u32(math.Float32bits(v))
	case bool:
		e.u32(ggufBool)
		if v {
			e.raw([]byte{1})
		} else {
			e.raw([]byte{0})
		}
	case []string:
		e.u32(ggufArray)
		e.u32(ggufString)
		e.u64(uint64(len(v)))
		for _, s := range v {
			e.str(s)
		}
	case []int32:
		e.u32(ggufArray)
		e.u32(ggufInt32)
		e.u64(uint64(len(v)))
		for _, x := range v {
			e.u32(uint32(x))
		}
	case rawValue:
		e.u32(uint32(v.typ))
		e.raw(v.body)
	default:
		e.err = fmt.Errorf("testutil: no GGUF encoding for %T", v)
	}
}
