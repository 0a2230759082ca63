package llm

import (
	"slices"
	"testing"

	"github.com/memload/memload/internal/testutil"
)

// TestKVPages is the safety proof for giving back the empty KV cache's
// pages: with random weights, a cell read before it was written, or a
// written page lost, would change the greedy answers. The model's cache
// is 64 MiB, so that glibc maps it on its own, as the 1.5B model's 112 MiB
// at 4096 tokens; the conversation has several turns, a new conversation
// after it (the cells are cleared without their data) and one reusing
// the cache.
func TestKVPages(t *testing.T) {
	for _, arch := range []string{"qwen2", "llama"} {
		t.Run(arch, func(t *testing.T) {
			cfg := testutil.TinyConfig(arch)
			cfg.Quant, cfg.Embedding, cfg.FeedForward, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.Context = testutil.Q4KM, 256, 512, 8, 4, 4, 8192
			path := testutil.TinyModelWith(t, cfg)
			const kvBytes = 8 * 8192 * 256 * 2 * 2 // layers × cells × K and V of 4 heads of 64 × f16

			converse := func(keep bool) (*Model, [][]int) {
				m := loadModel(t, path, func(o *Options) { o.ContextSize = 8192; o.KeepPages = keep })
				msgs := []Message{{Role: RoleSystem, Content: "You answer questions about memory files."}}
				var answers [][]int
				for i := range 3 {
					msgs = append(msgs, Message{Role: RoleUser, Content: "Where is the model now?"})
					tr := chat(t, m, msgs, greedy(24))
					answers = append(answers, tr.tokens)
					msgs = append(msgs, Message{Role: RoleAssistant, Content: string(rune('a' + i))})
				}
				answers = append(answers, chat(t, m, hello, greedy(24)).tokens)
				return m, answers
			}
			kept, want := converse(true)
			m, got := converse(false)
			if kept.kvGiven != 0 {
				t.Errorf("%d bytes given back with KeepPages", kept.kvGiven)
			}
			if m.kvGiven < kvBytes/2 || m.kvGiven > kvBytes {
				t.Errorf("%d bytes of the KV cache given back, want most of its %d", m.kvGiven, kvBytes)
			}
			for i := range want {
				if !slices.Equal(got[i], want[i]) {
					t.Errorf("answer %d: with the pages given back %v, kept %v", i, got[i], want[i])
				}
			}
		})
	}
}
