package testutil

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math"
	mrand "math/rand/v2"
	"slices"
	"strings"
)

// Corruption is one damaged copy of a valid model, for tests that a model
// file never takes the process down.
type Corruption struct {
	Class string // what kind of damage: "header", "metadata", "hparam", "tensor-type", "tensor-shape", "tensors", "layout", "vocab", "flip"
	Name  string // the damage, such as "hparam/qwen2.block_count=0"
	write func(w io.Writer) error
}

// Bytes returns the damaged file.
func (c Corruption) Bytes() []byte {
	var b bytes.Buffer
	c.write(&b) // a bytes.Buffer does not fail
	return b.Bytes()
}

// WriteTo writes the damaged file to w. Most corruptions stream the valid
// model's tensor data as it is, allocating little.
func (c Corruption) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	err := c.write(cw)
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// CorruptConfig returns the model the corruptions start from: small, but
// with rows of 256 elements, so that every ggml type fits every matrix.
func CorruptConfig(arch string) ModelConfig {
	return ModelConfig{
		Name: "corrupt-" + arch, Arch: arch,
		Embedding: 256, FeedForward: 256, Layers: 2, Heads: 4, KVHeads: 2,
		Vocab: 512, Context: 512, Quant: F32, Seed: 1,
	}
}

// Corruptions returns damaged variants of the model cfg describes: every
// header field, metadata value types, each hyperparameter over its edge
// values, every ggml type and a set of wrong shapes for each tensor role,
// missing and extra tensors, tensor data out of place, vocabulary damage,
// and random byte changes drawn from seed. Each is built when asked for.
func Corruptions(cfg ModelConfig, seed uint64) ([]Corruption, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	base := newRawModel(cfg)
	var out []Corruption
	add := func(class, name string, edit func(m *rawModel)) {
		out = append(out, Corruption{Class: class, Name: class + "/" + name, write: func(w io.Writer) error {
			m := base.clone()
			edit(m)
			return m.encodeTo(w)
		}})
	}
	addBytes := func(class, name string, edit func(b []byte) []byte) {
		out = append(out, Corruption{Class: class, Name: class + "/" + name, write: func(w io.Writer) error {
			_, err := w.Write(edit(base.encode()))
			return err
		}})
	}
	a := cfg.Arch + "."
	good := base.encode()
	layout := base.layoutOf()

	// The header's fields and truncations.
	addBytes("header", "magic", func(b []byte) []byte { copy(b, "GGUG"); return b })
	for _, v := range []uint32{0, 1, 2, 4, math.MaxUint32} {
		addBytes("header", fmt.Sprintf("version=%d", v), func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], v); return b })
	}
	for _, f := range []struct {
		name string
		at   int
		n    int64
	}{{"n_tensors", 8, int64(len(base.tensors))}, {"n_kv", 16, int64(len(base.kvs))}} {
		for _, v := range []uint64{0, uint64(f.n - 1), uint64(f.n + 1), math.MaxUint32, math.MaxUint64} {
			addBytes("header", fmt.Sprintf("%s=%d", f.name, v), func(b []byte) []byte { binary.LittleEndian.PutUint64(b[f.at:], v); return b })
		}
	}
	for _, n := range []int64{0, 3, 8, 20, 24, 100, layout.infoStart, layout.infoStart + 10, layout.dataStart - 1, layout.dataStart,
		layout.dataStart + 1000, int64(len(good)) / 2, int64(len(good)) - 1} {
		addBytes("header", fmt.Sprintf("truncated-at-%d", n), func(b []byte) []byte { return b[:n] })
	}

	// Metadata: each key missing, and stored as other types.
	for _, e := range base.kvs {
		add("metadata", "missing-"+e.key, func(m *rawModel) { m.del(e.key) })
		for _, t := range []Type{GGUFUint8, GGUFInt32, GGUFUint64, GGUFFloat32, GGUFFloat64, GGUFBool, GGUFString, GGUFArray} {
			if v, ok := convert(e.value, t); ok {
				add("metadata", fmt.Sprintf("%s-as-%s", e.key, t), func(m *rawModel) { m.set(e.key, v) })
			}
		}
	}
	add("metadata", "key-with-NUL", func(m *rawModel) { m.set("general.architecture\x00x", "llama") })
	add("metadata", "duplicate-key", func(m *rawModel) { m.kvs = append(m.kvs, kv{"general.name", "again"}) })

	// Hyperparameters over their edge values.
	u32 := func(key string, vs ...uint32) {
		for _, v := range vs {
			add("hparam", fmt.Sprintf("%s=%d", key, v), func(m *rawModel) { m.set(key, v) })
		}
	}
	u32(a+"context_length", 0, 1, math.MaxUint32)
	u32(a+"embedding_length", 0, 1, 128, 512, math.MaxUint32)
	u32(a+"block_count", 0, 1, 3, 512, 513, math.MaxUint32)
	u32(a+"feed_forward_length", 0, 1, 128, math.MaxUint32)
	u32(a+"attention.head_count", 0, 1, 3, 8, 256, math.MaxUint32)
	u32(a+"attention.head_count_kv", 0, 1, 3, 4, 8, math.MaxUint32)
	u32(a+"rope.dimension_count", 0, 1, 32, 63, 128, math.MaxUint32)
	u32(a+"attention.key_length", 0, 32, 64, 128, math.MaxUint32)
	u32(a+"attention.value_length", 0, 32, 64, 128)
	u32(a+"expert_count", 0, 1, 8, 1024)
	u32(a+"expert_used_count", 0, 1, 2)
	u32(a+"attention.sliding_window", 0, 1)
	u32("general.alignment", 0, 1, 2, 3, 4, 8, 16, 64, 4096)
	for _, p := range [][2]uint32{{8, 2}, {2, 4}, {0, 1}, {1, 1}, {4, 0}} {
		add("hparam", fmt.Sprintf("expert_count=%d,expert_used_count=%d", p[0], p[1]), func(m *rawModel) {
			m.set(a+"expert_count", p[0])
			m.set(a+"expert_used_count", p[1])
		})
	}
	f32 := func(key string, vs ...float64) {
		for _, v := range vs {
			add("hparam", fmt.Sprintf("%s=%g", key, v), func(m *rawModel) { m.set(key, float32(v)) })
		}
	}
	f32(a+"attention.layer_norm_rms_epsilon", math.NaN(), -1e-6, 0, math.Inf(1), math.Inf(-1), 1e30)
	f32(a+"attention.layer_norm_epsilon", math.NaN(), -1)
	f32(a+"rope.freq_base", 0, math.NaN(), -1, math.Inf(1))
	f32(a+"rope.scaling.factor", 0, -1, math.NaN(), 4)
	for _, v := range []string{"none", "linear", "yarn", "longrope", "bogus", ""} {
		add("hparam", fmt.Sprintf("rope.scaling.type=%q", v), func(m *rawModel) { m.set(a+"rope.scaling.type", v) })
	}
	u32(a+"rope.scaling.original_context_length", 0, 1)
	n := uint32(cfg.Layers)
	for _, arr := range []struct {
		key string
		vs  []int32
	}{
		{"attention.head_count_kv", []int32{2, 0}}, {"attention.head_count_kv", []int32{0, 2}},
		{"attention.head_count_kv", []int32{2}}, {"attention.head_count_kv", []int32{2, 2, 2}},
		{"attention.head_count_kv", []int32{2, 2}}, {"attention.head_count_kv", []int32{2, -1}},
		{"attention.head_count_kv", []int32{1, 4}}, {"attention.head_count", []int32{4, 0}},
		{"attention.head_count", []int32{4, 4}}, {"attention.head_count", []int32{4, 8}},
		{"feed_forward_length", []int32{256, 0}}, {"feed_forward_length", []int32{256, 256}},
		{"feed_forward_length", []int32{256, 512}},
	} {
		add("hparam", fmt.Sprintf("%s=%v", arr.key, arr.vs), func(m *rawModel) { m.set(a+arr.key, arr.vs) })
	}
	add("hparam", "head_count_kv-float-array", func(m *rawModel) {
		m.set(a+"attention.head_count_kv", rawArray(GGUFFloat32, int(n), func(e *encoder, i int) { e.u32(math.Float32bits(2)) }))
	})
	add("hparam", "head_count_kv-uint8-array", func(m *rawModel) {
		m.set(a+"attention.head_count_kv", rawArray(GGUFUint8, int(n), func(e *encoder, i int) { e.raw([]byte{2}) }))
	})

	// Tensor types: every ggml type id (and some that are none) for a
	// tensor of each role.
	roles := []string{"token_embd.weight", "output.weight", "output_norm.weight", "blk.1.ffn_norm.weight",
		"blk.0.attn_k.weight", "blk.1.ffn_down.weight"}
	if cfg.Arch == "qwen2" {
		roles = append(roles, "blk.1.attn_v.bias")
	}
	for _, name := range roles {
		for _, id := range append(slices.Sorted(maps.Keys(ggmlTypes)), 31, 36, 42, 1000) {
			if id == typeF32 {
				continue
			}
			add("tensor-type", fmt.Sprintf("%s=%s", name, ggmlTypeName(id)), func(m *rawModel) { m.tensor(name).typ = id })
		}
	}

	// Tensor shapes, names and presence.
	for _, t := range base.tensors {
		shapes := map[string]func([]uint64) []uint64{
			"dim0x2":    func(d []uint64) []uint64 { d[0] *= 2; return d },
			"dimlast+1": func(d []uint64) []uint64 { d[len(d)-1]++; return d },
			"plus-1":    func(d []uint64) []uint64 { return append(d, 1) },
			"plus-2":    func(d []uint64) []uint64 { return append(d, 2) },
			"flat": func(d []uint64) []uint64 {
				p := uint64(1)
				for _, x := range d {
					p *= x
				}
				return []uint64{p}
			},
		}
		if len(t.dims) == 2 {
			shapes["transposed"] = func(d []uint64) []uint64 { return []uint64{d[1], d[0]} }
		} else {
			shapes["as-row"] = func(d []uint64) []uint64 { return []uint64{1, d[0]} }
		}
		for _, sn := range slices.Sorted(maps.Keys(shapes)) {
			if slices.Equal(shapes[sn](slices.Clone(t.dims)), t.dims) {
				continue
			}
			add("tensor-shape", t.name+"-"+sn, func(m *rawModel) {
				x := m.tensor(t.name)
				x.dims = shapes[sn](slices.Clone(x.dims))
			})
		}
		add("tensors", "missing-"+t.name, func(m *rawModel) { m.delTensor(t.name) })
	}
	add("tensors", "duplicate-name-with-NUL", func(m *rawModel) {
		x := *m.tensor("output_norm.weight")
		x.name += "\x00dup"
		m.tensors = append(m.tensors, x)
	})
	add("tensors", "name-with-NUL", func(m *rawModel) { m.tensor("output_norm.weight").name += "\x00x" })
	add("tensors", "unknown-tensor", func(m *rawModel) {
		x := *m.tensor("output_norm.weight")
		x.name = "blk.0.bogus.weight"
		m.tensors = append(m.tensors, x)
	})
	add("tensors", "extra-layer", func(m *rawModel) {
		x := *m.tensor("blk.1.attn_norm.weight")
		x.name = fmt.Sprintf("blk.%d.attn_norm.weight", cfg.Layers)
		m.tensors = append(m.tensors, x)
	})
	add("tensors", "name-63-bytes", func(m *rawModel) { m.tensor("output_norm.weight").name = strings.Repeat("x", 63) })
	add("tensors", "name-64-bytes", func(m *rawModel) { m.tensor("output_norm.weight").name = strings.Repeat("x", 64) })
	add("tensors", "layer-count-lies", func(m *rawModel) {
		m.set(a+"block_count", uint32(cfg.Layers+1))
	})
	add("tensors", "one-layer-fewer", func(m *rawModel) {
		m.set(a+"block_count", uint32(cfg.Layers-1))
	})

	// Tensor data out of the place llama.cpp's reader expects.
	for _, i := range []int{0, 1, len(base.tensors) / 2, len(base.tensors) - 1} {
		name := base.tensors[i].name
		add("layout", name+"-gap", func(m *rawModel) { m.shift[i] = ggufAlignment })
		add("layout", name+"-misaligned", func(m *rawModel) { m.shift[i] = 1 })
		add("layout", name+"-past-end", func(m *rawModel) { m.shift[i] = 1 << 40 })
		if i > 0 {
			add("layout", name+"-overlaps-previous", func(m *rawModel) { m.shift[i] = -ggufAlignment })
			add("layout", name+"-at-previous", func(m *rawModel) { m.sameAsPrevious[i] = true })
		}
	}
	add("layout", "swapped-data", func(m *rawModel) { m.swap = [2]int{1, 2} })
	add("layout", "all-at-zero", func(m *rawModel) {
		for i := range m.tensors {
			m.sameAsPrevious[i] = true
		}
	})

	// The vocabulary.
	tokens, _, _ := vocabulary(cfg.Vocab)
	vocab := func(name string, edit func(tokens []string) []string) {
		add("vocab", name, func(m *rawModel) {
			m.set("tokenizer.ggml.tokens", rawStrings(edit(slices.Clone(tokens))))
		})
	}
	vocab("NUL-embedded-equal", func(t []string) []string { t[300] = t[299] + "\x00x"; return t })
	vocab("NUL-first", func(t []string) []string { t[300] = "\x00"; return t })
	vocab("empty-token", func(t []string) []string { t[300] = ""; return t })
	vocab("two-empty-tokens", func(t []string) []string { t[300], t[301] = "", ""; return t })
	vocab("duplicate", func(t []string) []string { t[300] = t[299]; return t })
	vocab("EMPTY-collides", func(t []string) []string { t[300] = ""; t[301] = "[EMPTY_300]"; return t })
	vocab("one-fewer", func(t []string) []string { return t[:len(t)-1] })
	vocab("one-more", func(t []string) []string { return append(t, "extra") })
	add("vocab", "one-more-everywhere", func(m *rawModel) {
		m.set("tokenizer.ggml.tokens", rawStrings(append(slices.Clone(tokens), "extra")))
		m.set("tokenizer.ggml.token_type", append(slices.Clone(m.get("tokenizer.ggml.token_type").([]int32)), 1))
	})
	vocab("no-newline-byte", func(t []string) []string { t[slices.Index(t, "Ċ")] = "notnewline"; return t })
	vocab("no-byte-tokens", func(t []string) []string {
		for i := range 256 {
			t[i] = fmt.Sprintf("tok%d", i)
		}
		return t
	})
	vocab("invalid-UTF-8", func(t []string) []string { t[300] = "\xff\xfe"; return t })
	for _, key := range []string{"tokenizer.ggml.token_type"} {
		add("vocab", key+"-one-fewer", func(m *rawModel) { m.set(key, m.get(key).([]int32)[:cfg.Vocab-1]) })
		add("vocab", key+"-one-more", func(m *rawModel) { m.set(key, append(slices.Clone(m.get(key).([]int32)), 1)) })
	}
	for _, v := range []int32{0, 2, 5, 6, 7, 99, -1} {
		add("vocab", fmt.Sprintf("token_type=%d", v), func(m *rawModel) {
			m.set("tokenizer.ggml.token_type", slices.Repeat([]int32{v}, cfg.Vocab))
		})
	}
	for _, d := range []int{-1, 0, 1} {
		add("vocab", fmt.Sprintf("scores-len%+d", d), func(m *rawModel) {
			m.set("tokenizer.ggml.scores", rawArray(GGUFFloat32, cfg.Vocab+d, func(e *encoder, i int) { e.u32(math.Float32bits(float32(-i))) }))
		})
	}
	add("vocab", "scores-NaN", func(m *rawModel) {
		m.set("tokenizer.ggml.scores", rawArray(GGUFFloat32, cfg.Vocab, func(e *encoder, i int) { e.u32(math.Float32bits(float32(math.NaN()))) }))
	})
	for name, merges := range map[string][]string{
		"merges-empty-strings": {"", "", ""}, "merges-no-space": {"ab", "cd"}, "merges-unknown-tokens": {"zzq yyq", "Ġ Ġ"},
		"merges-leading-space": {" a", "  "}, "merges-none": {},
	} {
		add("vocab", name, func(m *rawModel) { m.set("tokenizer.ggml.merges", merges) })
	}
	for _, v := range []string{"llama", "bert", "t5", "rwkv", "plamo2", "none", "no_vocab", "bogus", "", "gpt2\x00x"} {
		add("vocab", fmt.Sprintf("model=%q", v), func(m *rawModel) { m.set("tokenizer.ggml.model", v) })
	}
	for _, v := range []string{"bogus", "default", "", "llama3", "deepseek-r1-qwen"} {
		add("vocab", fmt.Sprintf("pre=%q", v), func(m *rawModel) { m.set("tokenizer.ggml.pre", v) })
	}
	for _, key := range []string{"bos", "eos", "padding", "unknown", "eot", "sep"} {
		for _, v := range []uint32{uint32(cfg.Vocab - 1), uint32(cfg.Vocab), math.MaxUint32} {
			add("vocab", fmt.Sprintf("%s_token_id=%d", key, v), func(m *rawModel) { m.set("tokenizer.ggml."+key+"_token_id", v) })
		}
	}
	add("vocab", "bos-as-int32", func(m *rawModel) {
		m.set("tokenizer.ggml.bos_token_id", rawValue{GGUFInt32, []byte{0xff, 0xff, 0xff, 0xff}})
	})

	// Random byte changes: most in the header, some in the data.
	rng := mrand.New(mrand.NewPCG(seed, 20))
	for i := range 60 {
		k := 1 + rng.IntN(8)
		ops := make([][2]int64, k)
		limit := layout.dataStart
		if i%6 == 5 {
			limit = int64(len(good))
		}
		for j := range ops {
			ops[j] = [2]int64{rng.Int64N(limit), int64(rng.IntN(256))}
		}
		addBytes("flip", fmt.Sprintf("seed%d-%d", seed, i), func(b []byte) []byte {
			for _, op := range ops {
				b[op[0]] ^= byte(op[1]) | 1
			}
			return b
		})
	}
	return out, nil
}

// MutateModel returns a copy of a valid model changed by program, a fuzzer's
// input read as a list of edits: byte flips, 32- and 64-bit edge values
// written over a field, cuts and truncations, aimed mostly at the header
// (the first headerLen bytes).
func MutateModel(model []byte, headerLen int64, program []byte) []byte {
	b := slices.Clone(model)
	edges := []uint64{0, 1, 2, 0x7f, 0x80, 0xff, 0xffff, 1<<31 - 1, 1 << 31, math.MaxUint32, 1 << 40, math.MaxInt64, math.MaxUint64}
	for len(program) >= 4 && len(b) > 16 {
		op, arg := program[0], binary.LittleEndian.Uint16(program[1:3])
		val := program[3]
		program = program[4:]
		span := int64(len(b))
		if op&0x80 == 0 {
			span = min(span, headerLen)
		}
		at := int64(arg) * span / 65536
		if op&0x40 != 0 && len(program) >= 2 {
			// A wider reach: two more bytes of offset.
			at = int64(uint32(arg)|uint32(binary.LittleEndian.Uint16(program))<<16) % span
			program = program[2:]
		}
		switch op & 7 {
		case 0, 1:
			b[at] ^= val | 1
		case 2:
			b[at] = val
		case 3:
			if at+4 <= int64(len(b)) {
				binary.LittleEndian.PutUint32(b[at:], uint32(edges[int(val)%len(edges)]))
			}
		case 4:
			if at+8 <= int64(len(b)) {
				binary.LittleEndian.PutUint64(b[at:], edges[int(val)%len(edges)])
			}
		case 5:
			b = b[:max(at, 1)]
		case 6:
			b = append(b[:at], b[min(at+int64(val)+1, int64(len(b))):]...)
		case 7:
			b = slices.Insert(b, int(at), bytes.Repeat([]byte{val}, int(val%16)+1)...)
		}
	}
	return b
}

// ModelHeader returns the header of the model cfg describes (up to where
// its tensor data starts) and the size of the whole file, without
// generating the data: for benchmarks of header checks on large shapes.
func ModelHeader(cfg ModelConfig) (header []byte, size int64, err error) {
	if err := cfg.check(); err != nil {
		return nil, 0, err
	}
	m := &rawModel{cfg: cfg, kvs: cfg.metadata(), tensors: cfg.tensors()}
	offsets := make([]uint64, len(m.tensors))
	var off uint64
	for i, t := range m.tensors {
		offsets[i] = off
		off += pad(t.size())
	}
	var buf bytes.Buffer
	e := &encoder{w: &buf}
	m.header(e, offsets)
	e.raw(make([]byte, pad(e.n)-e.n))
	return buf.Bytes(), int64(e.n + off), e.err
}

// ModelHeaderLen returns where the tensor data of the model cfg describes
// starts: the length of its header.
func ModelHeaderLen(cfg ModelConfig) int64 { return newRawModel(cfg).layoutOf().dataStart }

// EncodeModel returns the model cfg describes as the bytes WriteModel
// would write.
func EncodeModel(cfg ModelConfig) ([]byte, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return newRawModel(cfg).encode(), nil
}

// rawModel is a model's metadata and tensor list, edited by a corruption
// and then encoded with whatever it holds.
type rawModel struct {
	cfg            ModelConfig
	kvs            []kv
	tensors        []tensor
	order          []int         // the generator's index of each tensor: its data stream
	shift          map[int]int64 // added to a tensor's data offset
	sameAsPrevious map[int]bool  // the tensor's offset is the previous one's
	swap           [2]int        // tensors whose offsets are swapped, if not equal
	data           []genData     // each generated tensor's data, shared by clones
}

type genData struct {
	typ   uint32
	dims  []uint64
	bytes []byte
}

func newRawModel(cfg ModelConfig) *rawModel {
	m := &rawModel{cfg: cfg, kvs: cfg.metadata(), tensors: cfg.tensors(), shift: map[int]int64{}, sameAsPrevious: map[int]bool{}}
	var buf bytes.Buffer
	if err := writeGGUF(&buf, nil, m.tensors); err != nil {
		panic(err)
	}
	// The data follows the 24 bytes of magic, version and counts, the
	// tensor infos and the padding.
	hdr := uint64(24)
	for _, t := range m.tensors {
		hdr += uint64(len(t.name)) + 8 + 4 + 8*uint64(len(t.dims)) + 4 + 8
	}
	b := buf.Bytes()[pad(hdr):]
	for i, t := range m.tensors {
		m.order = append(m.order, i)
		n := t.size()
		m.data = append(m.data, genData{t.typ, t.dims, b[:n]})
		b = b[pad(n):]
	}
	return m
}

func (m *rawModel) clone() *rawModel {
	c := *m
	c.kvs = slices.Clone(m.kvs)
	c.tensors = slices.Clone(m.tensors)
	c.order = slices.Clone(m.order)
	c.shift = map[int]int64{}
	c.sameAsPrevious = map[int]bool{}
	return &c
}

func (m *rawModel) get(key string) any {
	for _, e := range m.kvs {
		if e.key == key {
			return e.value
		}
	}
	return nil
}

func (m *rawModel) set(key string, v any) {
	for i := range m.kvs {
		if m.kvs[i].key == key {
			m.kvs[i].value = v
			return
		}
	}
	m.kvs = append(m.kvs, kv{key, v})
}

func (m *rawModel) del(key string) {
	m.kvs = slices.DeleteFunc(m.kvs, func(e kv) bool { return e.key == key })
}

func (m *rawModel) tensor(name string) *tensor {
	for i := range m.tensors {
		if m.tensors[i].name == name {
			return &m.tensors[i]
		}
	}
	panic("testutil: no tensor " + name)
}

func (m *rawModel) delTensor(name string) {
	i := slices.IndexFunc(m.tensors, func(t tensor) bool { return t.name == name })
	m.tensors = slices.Delete(m.tensors, i, i+1)
	m.order = slices.Delete(m.order, i, i+1)
}

type rawLayout struct {
	infoStart, dataStart int64
}

func (m *rawModel) layoutOf() rawLayout {
	var l rawLayout
	e := &encoder{w: &bytes.Buffer{}}
	m.header(e, nil)
	l.dataStart = int64(pad(e.n))
	e = &encoder{w: &bytes.Buffer{}}
	e.raw(make([]byte, 24))
	for _, x := range m.kvs {
		e.rawStr(x.key)
		e.value(x.value)
	}
	l.infoStart = int64(e.n)
	return l
}

// header writes the magic, counts, metadata and tensor infos, with the
// data offsets given (the standard ones if nil).
func (m *rawModel) header(e *encoder, offsets []uint64) {
	e.raw([]byte("GGUF"))
	e.u32(3)
	e.u64(uint64(len(m.tensors)))
	e.u64(uint64(len(m.kvs)))
	for _, x := range m.kvs {
		e.rawStr(x.key)
		e.value(x.value)
	}
	for i, t := range m.tensors {
		e.rawStr(t.name)
		e.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			e.u64(d)
		}
		e.u32(t.typ)
		if offsets != nil {
			e.u64(offsets[i])
		} else {
			e.u64(0)
		}
	}
}

// encode writes the model: data offsets laid out one after the other,
// padded to the alignment, then changed as the corruption says; the data
// is generated for each tensor at its standard place.
func (m *rawModel) encode() []byte {
	var b bytes.Buffer
	m.encodeTo(&b)
	return b.Bytes()
}

// encodeTo writes the model to w.
func (m *rawModel) encodeTo(w io.Writer) error {
	align := uint64(ggufAlignment)
	if a, ok := m.get("general.alignment").(uint32); ok && a >= 8 && a&(a-1) == 0 {
		align = uint64(a)
	}
	padA := func(n uint64) uint64 { return (n + align - 1) / align * align }
	sizes := make([]uint64, len(m.tensors))
	std := make([]uint64, len(m.tensors))
	var off uint64
	for i, t := range m.tensors {
		sizes[i] = rawSize(t)
		std[i] = off
		off += padA(sizes[i])
	}
	offsets := slices.Clone(std)
	for i := range offsets {
		if m.sameAsPrevious[i] && i > 0 {
			offsets[i] = offsets[i-1]
		}
		if m.sameAsPrevious[i] && i == 0 {
			offsets[i] = 0
		}
		offsets[i] = uint64(int64(offsets[i]) + m.shift[i])
	}
	if s := m.swap; s[0] != s[1] {
		offsets[s[0]], offsets[s[1]] = offsets[s[1]], offsets[s[0]]
	}
	e := &encoder{w: w}
	m.header(e, offsets)
	e.raw(make([]byte, padA(e.n)-e.n))
	for i, t := range m.tensors {
		n := padA(sizes[i])
		if i < len(m.order) {
			// A tensor of its generated type and shape keeps its data;
			// others are zeros, a valid value of every type.
			if g := m.data[m.order[i]]; g.typ == t.typ && slices.Equal(g.dims, t.dims) {
				e.raw(g.bytes)
				n -= uint64(len(g.bytes))
			}
		}
		for n > 0 {
			k := min(n, uint64(len(zeros)))
			e.raw(zeros[:k])
			n -= k
		}
	}
	return e.err
}

var zeros = make([]byte, 64<<10)

// rawSize is the data size of t with its type and dimensions.
func rawSize(t tensor) uint64 {
	n := uint64(1)
	for _, d := range t.dims {
		n *= d
	}
	tt, ok := ggmlTypes[t.typ]
	if !ok {
		return n * 4
	}
	return n / tt.block * tt.bytes
}

// rawStr writes a length-prefixed string as it is, NUL bytes and invalid
// UTF-8 included.
func (e *encoder) rawStr(s string) {
	e.u64(uint64(len(s)))
	e.raw([]byte(s))
}

// Type is a GGUF metadata value type.
type Type uint32

// GGUF metadata value types, as the corruptions use them.
const (
	GGUFUint8 Type = iota
	GGUFInt8
	GGUFUint16
	GGUFInt16
	GGUFUint32
	GGUFInt32
	GGUFFloat32
	GGUFBool
	GGUFString
	GGUFArray
	GGUFUint64
	GGUFInt64
	GGUFFloat64
)

func (t Type) String() string {
	names := []string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}
	if int(t) < len(names) {
		return names[t]
	}
	return fmt.Sprintf("type%d", uint32(t))
}

// rawValue is a metadata value encoded as it is: its type, then body.
type rawValue struct {
	typ  Type
	body []byte
}

// rawStrings is a string array with its strings as they are.
func rawStrings(ss []string) rawValue {
	return rawArray(GGUFString, len(ss), func(e *encoder, i int) { e.rawStr(ss[i]) })
}

func rawArray(elem Type, n int, put func(e *encoder, i int)) rawValue {
	var buf bytes.Buffer
	e := &encoder{w: &buf}
	e.u32(uint32(elem))
	e.u64(uint64(n))
	for i := range n {
		put(e, i)
	}
	return rawValue{GGUFArray, buf.Bytes()}
}

// convert returns v stored as type t, if the generator's value has a
// sensible reading as t (a number as another number, anything as a
// string, a scalar as a one-element array).
func convert(v any, t Type) (rawValue, bool) {
	var num float64
	isNum := true
	switch x := v.(type) {
	case uint32:
		num = float64(x)
	case float32:
		num = float64(x)
	case bool:
		if x {
			num = 1
		}
	default:
		isNum = false
	}
	var buf bytes.Buffer
	e := &encoder{w: &buf}
	switch {
	case t == GGUFString:
		if _, ok := v.(string); ok {
			return rawValue{}, false
		}
		e.rawStr(fmt.Sprint(v))
	case t == GGUFArray:
		switch x := v.(type) {
		case []string, []int32:
			return rawValue{}, false
		case string:
			e.u32(uint32(GGUFString))
			e.u64(1)
			e.rawStr(x)
		default:
			if !isNum {
				return rawValue{}, false
			}
			e.u32(uint32(GGUFUint32))
			e.u64(1)
			e.u32(uint32(num))
		}
	case !isNum:
		// A string or an array as a number: its length.
		switch x := v.(type) {
		case string:
			num = float64(len(x))
		case []string:
			num = float64(len(x))
		case []int32:
			num = float64(len(x))
		}
		return convert(uint32(num), t)
	default:
		if _, same := map[Type]bool{GGUFUint32: true}[t]; same {
			if _, u := v.(uint32); u {
				return rawValue{}, false
			}
		}
		if _, f := v.(float32); f && t == GGUFFloat32 {
			return rawValue{}, false
		}
		if _, b := v.(bool); b && t == GGUFBool {
			return rawValue{}, false
		}
		switch t {
		case GGUFUint8:
			e.raw([]byte{byte(num)})
		case GGUFInt32:
			e.u32(uint32(int32(num)))
		case GGUFUint64:
			e.u64(uint64(num))
		case GGUFFloat32:
			e.u32(math.Float32bits(float32(num)))
		case GGUFFloat64:
			e.u64(math.Float64bits(num))
		case GGUFBool:
			e.raw([]byte{byte(min(num, 1))})
		default:
			return rawValue{}, false
		}
	}
	return rawValue{t, buf.Bytes()}, true
}

type ggmlType struct {
	name         string
	block, bytes uint64
}

// ggmlTypes are ggml's types with their block sizes, as in llama.cpp
// v0.5.0 (llm's tests check them against the GGUF parser's).
var ggmlTypes = map[uint32]ggmlType{
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

// GGMLTypes calls fn with each ggml type the corruptions know: its id,
// name, elements per block and bytes per block.
func GGMLTypes(fn func(id uint32, name string, block, bytes uint64)) {
	for id, t := range ggmlTypes {
		fn(id, t.name, t.block, t.bytes)
	}
}

func ggmlTypeName(id uint32) string {
	if t, ok := ggmlTypes[id]; ok {
		return t.name
	}
	return fmt.Sprintf("type%d", id)
}
