package gguf

import (
	"fmt"
	"strings"
)

// tokenizerModels are the tokenizer.ggml.model values llama.cpp v0.5.0
// knows (llama-vocab.cpp).
var tokenizerModels = map[string]bool{"no_vocab": true, "none": true, "llama": true, "bert": true, "gpt2": true, "t5": true, "rwkv": true, "plamo2": true}

// vocab checks the vocabulary as llama.cpp reads it: token strings are C
// strings there, and it looks some tokens up by text, throwing an
// exception that nothing catches when they are missing.
func (c *checker) vocab() error {
	tokens, ok := c.h.Strings("tokenizer.ggml.tokens")
	if !ok {
		return nil // llama.cpp reports a missing vocabulary itself
	}
	// llama.cpp asserts that its map from text to token has one entry per
	// token; it reads each token up to its first NUL, and names empty
	// ones [EMPTY_i].
	seen := make(map[string]int, len(tokens))
	for i, s := range tokens {
		c := s
		if j := strings.IndexByte(c, 0); j >= 0 {
			c = c[:j]
		}
		if c == "" {
			c = fmt.Sprintf("[EMPTY_%d]", i)
		}
		if j, dup := seen[c]; dup {
			if c != s {
				return bad("tokenizer.ggml.tokens[%d] is %q, which llama.cpp reads up to its NUL as %q, the same as token %d; llama.cpp needs every token to differ%s", i, s, c, j, fixConverter)
			}
			return bad("tokenizer.ggml.tokens has %q twice (tokens %d and %d); llama.cpp needs every token to differ%s", c, j, i, fixConverter)
		}
		seen[c] = i
	}
	n := uint64(len(tokens))
	for _, key := range []string{"tokenizer.ggml.scores", "tokenizer.ggml.token_type"} {
		if v, ok := c.h.KV[key]; ok && v.Len != n {
			return bad("%s is %s, the vocabulary has %d tokens; llama.cpp needs one per token%s", key, v, n, fixConverter)
		}
	}
	// The embedding and output matrices have a row per token: a token past
	// them would be looked up out of bounds.
	for _, name := range []string{"token_embd.weight", "output.weight"} {
		if t, ok := c.tensor(name); ok && len(t.Dims) == 2 && t.Dims[1] != n {
			return bad("tensor %q has %d rows, the vocabulary %d tokens; llama.cpp needs one row per token%s", name, t.Dims[1], n, fixDamaged)
		}
	}
	v, ok := c.h.KV["tokenizer.ggml.model"]
	if !ok {
		return nil
	}
	model, isString := v.scalar.(string)
	if v.Type != String || !isString || !tokenizerModels[model] {
		return bad("tokenizer.ggml.model is %s; llama.cpp knows gpt2, llama, bert, t5, rwkv, plamo2 and none%s", v, fixConverter)
	}
	if model == "llama" {
		// SentencePiece: llama.cpp looks up byte tokens (<0x0A> for the
		// newline, the others for text outside the vocabulary) with
		// std::map::at.
		for b := range 256 {
			if _, ok := seen[fmt.Sprintf("<0x%02X>", b)]; !ok {
				return bad("tokenizer.ggml.model is \"llama\" (SentencePiece), but the vocabulary has no byte token <0x%02X>; llama.cpp needs all 256: "+
					"the tokenizer model does not fit the vocabulary%s", b, fixConverter)
			}
		}
	}
	return nil
}
