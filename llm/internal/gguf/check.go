package gguf

// The model's meaning, checked against what llama.cpp v0.5.0 assumes of it.
//
// llama.cpp checks much of a model as it loads it and refuses what is
// wrong with an error, but it takes some things on trust and then aborts
// (GGML_ASSERT), divides by zero or calls a null function pointer: a
// tensor type its CPU backend has no kernel for in that role, head sizes
// that disagree with the rope, expert counts that disagree with each
// other, a NaN epsilon, a rope scaling it does not know, a vocabulary that
// collapses when read as C strings. Check refuses these before llama.cpp
// sees the file. Each rule was found by loading damaged models in a child
// process (llm's TestCorruptModels) and is kept by that test.

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// FullyChecked are the architectures whose tensors and hyperparameters
// Check knows in full: the dense transformers memload's chatbot runs. Any
// other architecture gets the checks that hold for every one.
var FullyChecked = []string{"llama", "qwen2", "qwen3"}

// Limits of llama.cpp v0.5.0 (src/llama-hparams.h).
const (
	maxLayers  = 512 // LLAMA_MAX_LAYERS
	maxExperts = 512 // LLAMA_MAX_EXPERTS
)

// Usual causes, appended to the errors they explain.
const (
	fixConverter = "; the file was likely written by a converter for another llama.cpp version: convert or download it again for llama.cpp v0.5.0"
	fixDamaged   = "; the file is damaged (a partial or corrupted upload?): copy it again and compare its SHA-256"
)

// Check checks what llama.cpp assumes of the model beyond the header's
// syntax: the tensors' types for their roles and their data's layout, the
// hyperparameters against each other and the tensors' shapes, and the
// vocabulary as llama.cpp reads it. It reports whether the architecture
// is one of [FullyChecked]. Its errors match [ErrFormat].
func (h *Header) Check() (full bool, err error) {
	arch, _ := h.String("general.architecture")
	for _, a := range FullyChecked {
		full = full || a == arch
	}
	c := checker{h: h, arch: arch, full: full}
	for _, step := range []func() error{c.layout, c.tensorTypes, c.layers, c.heads, c.experts, c.floats, c.ropeScaling, c.vocab} {
		if err := step(); err != nil {
			return full, err
		}
	}
	return full, nil
}

type checker struct {
	h    *Header
	arch string
	full bool
}

func bad(format string, args ...any) error {
	return &Error{Offset: -1, Msg: fmt.Sprintf(format, args...)}
}

// layout checks that the tensors' data follow each other in the order of
// their descriptions, each padded to the alignment: llama.cpp's reader
// (gguf.cpp) refuses any other offset, and overlapping data would be two
// tensors sharing bytes.
func (c *checker) layout() error {
	var want uint64
	for _, t := range c.h.Tensors {
		if t.Offset != want {
			return bad("tensor %q's data is at offset %d of the data section; llama.cpp reads the tensors' data one after the other, padded to %d bytes, and needs it at %d%s",
				t.Name, t.Offset, c.h.Alignment, want, fixDamaged)
		}
		// ggml's CPU buffers assert that each tensor of a mapped file
		// starts at a multiple of TENSOR_ALIGNMENT.
		if at := uint64(c.h.DataOffset) + t.Offset; at%tensorAlignment != 0 {
			return bad("tensor %q's data starts at byte %d of the file; llama.cpp maps the file and needs each tensor at a multiple of %d bytes (general.alignment %d does not ensure it; 32 does)%s",
				t.Name, at, tensorAlignment, c.h.Alignment, fixConverter)
		}
		want += alignUp(t.Bytes, c.h.Alignment)
	}
	return nil
}

// tensorAlignment is ggml-backend's TENSOR_ALIGNMENT.
const tensorAlignment = 32

// Types the CPU backend has a kernel for, by role.
var (
	// norms, biases and other vectors: ggml's binary ops (add, mul) take
	// F32 activations with an F32 second operand only.
	vectorTypes = map[uint32]bool{0: true}
	// matmul weights and embeddings (mul_mat and get_rows): every type
	// but the ones that exist only as an intermediate (Q8_1, Q8_K) or as
	// integers and F64.
	matrixRefused = map[uint32]bool{9: true, 15: true, 24: true, 25: true, 26: true, 27: true, 28: true}
)

// tensorTypes checks each tensor's type against its role.
func (c *checker) tensorTypes() error {
	for _, t := range c.h.Tensors {
		name := tensorTypes[t.Type].name
		if isVector(t) {
			if !vectorTypes[t.Type] {
				return bad("tensor %q (%s) is %s; llama.cpp's CPU backend computes norms, biases and other vectors only as F32%s",
					t.Name, dims(t), name, fixConverter)
			}
			continue
		}
		if matrixRefused[t.Type] {
			return bad("tensor %q (%s) is %s; llama.cpp's CPU backend cannot multiply or look up weights of that type "+
				"(use F32, F16, BF16 or a quantization such as Q8_0 or Q4_K)%s", t.Name, dims(t), name, fixConverter)
		}
	}
	return nil
}

// isVector reports whether t is used as a vector: one dimension (trailing
// ones aside), or a norm or a bias by its name.
func isVector(t TensorInfo) bool {
	n := 0
	for _, d := range t.Dims {
		if d > 1 {
			n++
		}
	}
	return n <= 1 || strings.HasSuffix(t.Name, ".bias") || strings.HasSuffix(t.Name, "_norm.weight")
}

func dims(t TensorInfo) string {
	s := make([]string, len(t.Dims))
	for i, d := range t.Dims {
		s[i] = strconv.FormatUint(d, 10)
	}
	return strings.Join(s, "×")
}

var layerName = regexp.MustCompile(`^blk\.([0-9]+)\.`)

// layers checks block_count against the layers the tensors hold.
func (c *checker) layers() error {
	key := c.arch + ".block_count"
	v, ok := c.h.KV[key]
	if !ok && !c.full {
		return nil // llama.cpp says what it misses, or that it knows no such architecture
	}
	if !ok {
		return bad("no %s: llama.cpp needs the number of layers%s", key, fixConverter)
	}
	n, isUint := v.scalar.(uint64)
	if v.Type != Uint32 || !isUint {
		return bad("%s is %s; llama.cpp reads it as a uint32%s", key, v, fixConverter)
	}
	if n == 0 || n > maxLayers {
		return bad("%s is %d; llama.cpp needs 1 to %d layers%s", key, n, maxLayers, fixDamaged)
	}
	present := make([]bool, n)
	for _, t := range c.h.Tensors {
		m := layerName.FindStringSubmatch(t.Name)
		if m == nil {
			continue
		}
		i, err := strconv.ParseUint(m[1], 10, 64)
		if err != nil || i >= n {
			return bad("tensor %q is in layer %s, but %s is %d%s", t.Name, m[1], key, n, fixDamaged)
		}
		present[i] = true
	}
	for i, ok := range present {
		if !ok {
			return bad("layer %d has no tensors, but %s is %d: the file holds fewer layers than it says%s", i, key, n, fixDamaged)
		}
	}
	return nil
}

// perLayer returns a hyperparameter for each layer: a uint32 for all, or
// an array of one per layer, as llama.cpp's get_key_or_arr reads it. ok
// is false if the key is missing.
func (c *checker) perLayer(suffix string, layers int) (vals []uint64, ok bool, err error) {
	key := c.arch + "." + suffix
	v, ok := c.h.KV[key]
	if !ok {
		return nil, false, nil
	}
	if v.Type == Array {
		if v.ElemType != Uint32 && v.ElemType != Int32 {
			return nil, true, bad("%s is %s; llama.cpp reads it as a uint32 or an array of %d int32 or uint32 values%s", key, v, layers, fixConverter)
		}
		if v.Len != uint64(layers) || v.numbers == nil {
			return nil, true, bad("%s is %s; llama.cpp needs one value per layer, %d%s", key, v, layers, fixConverter)
		}
		for i, x := range v.numbers {
			if x < 0 || x > math.MaxUint32 {
				return nil, true, bad("%s[%d] is %g; llama.cpp needs a uint32%s", key, i, x, fixDamaged)
			}
			vals = append(vals, uint64(x))
		}
		return vals, true, nil
	}
	x, isUint := v.scalar.(uint64)
	if v.Type != Uint32 || !isUint {
		return nil, true, bad("%s is %s; llama.cpp reads it as a uint32%s", key, v, fixConverter)
	}
	for range layers {
		vals = append(vals, x)
	}
	return vals, true, nil
}

// uint32Key returns a uint32 hyperparameter; ok is false if it is missing.
func (c *checker) uint32Key(suffix string) (uint64, bool, error) {
	key := c.arch + "." + suffix
	v, ok := c.h.KV[key]
	if !ok {
		return 0, false, nil
	}
	x, isUint := v.scalar.(uint64)
	if v.Type != Uint32 || !isUint {
		return 0, true, bad("%s is %s; llama.cpp reads it as a uint32%s", key, v, fixConverter)
	}
	return x, true, nil
}

// heads checks the attention heads and their sizes against each other, the
// rope and, for a fully checked architecture, the attention tensors.
func (c *checker) heads() error {
	layers, _ := c.h.Uint(c.arch + ".block_count")
	nEmbd, hasEmbd, err := c.uint32Key("embedding_length")
	if err != nil {
		return err
	}
	if c.full && (!hasEmbd || nEmbd == 0) {
		return bad("%s.embedding_length is %s; llama.cpp needs the width of the model%s", c.arch, c.h.KV[c.arch+".embedding_length"], fixConverter)
	}
	head, hasHead, err := c.perLayer("attention.head_count", int(layers))
	if err != nil {
		return err
	}
	if !hasHead {
		if c.full {
			return bad("no %s.attention.head_count: llama.cpp needs the number of attention heads%s", c.arch, fixConverter)
		}
		return nil
	}
	headKV, hasKV, err := c.perLayer("attention.head_count_kv", int(layers))
	if err != nil {
		return err
	}
	if !hasKV {
		headKV = head // llama.cpp's default
	}
	for i := range head {
		h, kv := head[i], headKV[i]
		if c.full && (h == 0 || kv == 0) {
			return bad("layer %d has %d attention heads and %d key/value heads; llama.cpp's %s graph needs at least one of each%s", i, h, kv, c.arch, fixDamaged)
		}
		if h > 0 && kv > 0 && (kv > h || h%kv != 0) {
			return bad("layer %d has %d attention heads and %d key/value heads; llama.cpp needs the key/value heads to divide the heads%s", i, h, kv, fixDamaged)
		}
	}
	if head[0] == 0 {
		return nil
	}
	// The head sizes as llama.cpp derives them (llama-model.cpp,
	// load_hparams): n_embd / n_head unless key_length and value_length
	// say otherwise, and the rope over all of a key unless
	// rope.dimension_count says otherwise.
	headK := nEmbd / head[0]
	if k, ok, err := c.uint32Key("attention.key_length"); err != nil {
		return err
	} else if ok {
		headK = k
	}
	headV := nEmbd / head[0]
	if v, ok, err := c.uint32Key("attention.value_length"); err != nil {
		return err
	} else if ok {
		headV = v
	}
	rot := headK
	if r, ok, err := c.uint32Key("rope.dimension_count"); err != nil {
		return err
	} else if ok {
		rot = r
	}
	if hasEmbd && (headK == 0 || headV == 0) {
		return bad("%s's heads are %d wide for keys and %d for values; llama.cpp needs both (%s.attention.key_length, value_length, or embedding_length / head_count)%s",
			c.arch, headK, headV, c.arch, fixDamaged)
	}
	if rot > headK || rot%2 != 0 {
		return bad("%s.rope.dimension_count is %d, the keys' heads are %d wide; llama.cpp needs an even number no larger%s", c.arch, rot, headK, fixDamaged)
	}
	if !c.full {
		return nil
	}
	// llama, qwen2 and qwen3 rotate whole heads of one size (their graphs
	// assert n_embd_head_k == n_embd_head_v == n_rot).
	if rot != headK || headV != headK {
		return bad("%s's heads are %d wide for keys and %d for values, with a rope over %d; llama.cpp's %s graph needs the three equal "+
			"(%s.attention.key_length, value_length, rope.dimension_count)%s", c.arch, headK, headV, rot, c.arch, c.arch, fixDamaged)
	}
	for i := range head {
		for _, w := range []struct {
			tensor   string
			rows     uint64
			rowsWhat string
		}{
			{"attn_q.weight", head[i] * headK, "head_count × key_length"},
			{"attn_k.weight", headKV[i] * headK, "head_count_kv × key_length"},
			{"attn_v.weight", headKV[i] * headV, "head_count_kv × value_length"},
		} {
			name := fmt.Sprintf("blk.%d.%s", i, w.tensor)
			t, ok := c.tensor(name)
			if !ok {
				continue // llama.cpp reports a missing tensor itself
			}
			if len(t.Dims) != 2 || t.Dims[0] != nEmbd || t.Dims[1] != w.rows {
				return bad("tensor %q is %s; with the hyperparameters, llama.cpp needs %d×%d (embedding_length × %s)%s",
					name, dims(t), nEmbd, w.rows, w.rowsWhat, fixDamaged)
			}
		}
	}
	return nil
}

func (c *checker) tensor(name string) (TensorInfo, bool) {
	for _, t := range c.h.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

// experts checks the expert counts against each other, as llama.cpp
// asserts them.
func (c *checker) experts() error {
	n, hasN, err := c.uint32Key("expert_count")
	if err != nil {
		return err
	}
	used, hasUsed, err := c.uint32Key("expert_used_count")
	if err != nil {
		return err
	}
	if !hasN && !hasUsed {
		return nil
	}
	switch {
	case n > maxExperts:
		return bad("%s.expert_count is %d; llama.cpp supports at most %d experts%s", c.arch, n, maxExperts, fixDamaged)
	case used > n:
		return bad("%s.expert_used_count is %d, expert_count %d; llama.cpp needs no more experts used than there are%s", c.arch, used, n, fixDamaged)
	case n > 0 && used == 0:
		return bad("%s.expert_count is %d but expert_used_count is 0 or missing; llama.cpp needs both or neither%s", c.arch, n, fixDamaged)
	}
	return nil
}

// floats checks the epsilons and rope frequencies: llama.cpp asserts eps
// >= 0, and no model has a NaN or infinite one.
func (c *checker) floats() error {
	for key, v := range c.h.KV {
		if !strings.HasPrefix(key, c.arch+".") {
			continue
		}
		eps := strings.HasSuffix(key, "epsilon")
		if !eps && !strings.HasSuffix(key, "rope.freq_base") {
			continue
		}
		x, isFloat := v.scalar.(float64)
		if v.Type != Float32 || !isFloat {
			return bad("%s is %s; llama.cpp reads it as a float32%s", key, v, fixConverter)
		}
		if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 || (!eps && x == 0) {
			return bad("%s is %g; llama.cpp needs a finite, positive number%s", key, x, fixDamaged)
		}
	}
	return nil
}

// ropeScalings are llama.cpp's rope scaling types (llama_rope_scaling_type):
// any other string makes it assert.
var ropeScalings = map[string]bool{"none": true, "linear": true, "yarn": true, "longrope": true}

func (c *checker) ropeScaling() error {
	key := c.arch + ".rope.scaling.type"
	v, ok := c.h.KV[key]
	if !ok {
		return nil
	}
	s, isString := v.scalar.(string)
	if v.Type != String || !isString || !ropeScalings[s] {
		return bad("%s is %s; llama.cpp knows none, linear, yarn and longrope%s", key, v, fixConverter)
	}
	return nil
}
