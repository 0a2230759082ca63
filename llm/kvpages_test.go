package llm

import (
	"bufio"
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"log/slog"

	"github.com/memload/memload/internal/idle"
	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm/internal/gguf"
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
			// The cache was cleared into 2 MiB pages and the mark taken off
			// before its pages were given back: its mapping says "no huge
			// pages" (nh), and no mapping is left marked (hg).
			vmas := readSmaps(t)
			if !slices.ContainsFunc(vmas, func(v vma) bool { return v.size >= kvBytes && v.size <= kvBytes+64<<10 && v.flags["nh"] }) {
				t.Errorf("no mapping of the KV cache's %d bytes has its huge-page mark taken off", kvBytes)
			}
			checkNoHugeMarks(t)
			for i := range want {
				if !slices.Equal(got[i], want[i]) {
					t.Errorf("answer %d: with the pages given back %v, kept %v", i, got[i], want[i])
				}
			}
		})
	}
}

// vma is a mapping of /proc/self/smaps: its size and VmFlags.
type vma struct {
	size  int64
	rss   int64 // bytes present
	flags map[string]bool
}

func readSmaps(t *testing.T) []vma {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []vma
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if r, _, ok := strings.Cut(line, " "); ok && strings.Contains(r, "-") && !strings.HasSuffix(r, ":") {
			a, b, _ := strings.Cut(r, "-")
			start, err1 := strconv.ParseUint(a, 16, 64)
			end, err2 := strconv.ParseUint(b, 16, 64)
			if err1 == nil && err2 == nil {
				out = append(out, vma{size: int64(end - start)})
			}
			continue
		}
		if rest, ok := strings.CutPrefix(line, "Rss:"); ok && len(out) > 0 {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			out[len(out)-1].rss = kb << 10
		}
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok && len(out) > 0 {
			out[len(out)-1].flags = map[string]bool{}
			for _, fl := range strings.Fields(rest) {
				out[len(out)-1].flags[fl] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkNoHugeMarks fails t if a mapping is left marked for huge pages:
// the KV cache's after its load, or the pool of an early load.
func checkNoHugeMarks(t *testing.T) {
	t.Helper()
	for _, v := range readSmaps(t) {
		if v.flags["hg"] {
			t.Errorf("a mapping of %d bytes is left marked for huge pages", v.size)
		}
	}
}

// TestKVCacheBytes checks the size of an early load's pool against the
// KV buffers llama.cpp allocates, for both architectures, grouped-query
// attention or not, and context sizes that are not a multiple of 256.
func TestKVCacheBytes(t *testing.T) {
	for _, arch := range []string{"qwen2", "llama"} {
		for _, kvHeads := range []int{2, 4} {
			cfg := testutil.TinyConfig(arch)
			cfg.KVHeads = kvHeads
			path := testutil.TinyModelWith(t, cfg)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := f.Stat()
			h, err := gguf.Parse(f, fi.Size())
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{1000, 2048} {
				var logged int64
				logger := slog.New(&recordHandler{fn: func(r slog.Record) {
					if b, ok := parseKVBuffer(strings.TrimPrefix(r.Message, "llama.cpp: ")); ok {
						logged += b
					}
				}})
				m := loadModel(t, path, func(o *Options) { o.ContextSize = n; o.Logger = logger })
				m.Close()
				want := kvCacheBytes(h, arch, n)
				// The log rounds to 0.01 MiB.
				if d := want - logged; logged == 0 || d < -(10<<10) || d > 10<<10 {
					t.Errorf("%s, %d KV heads, %d tokens: pool of %d bytes, llama.cpp's KV buffers %d", arch, kvHeads, n, want, logged)
				}
			}
		}
	}
}

// TestKVPool loads a model early, while its file is written: the pool
// touched for the KV cache is handed back before the cache is made, and
// the cache's pages are given back as in a load after the writing.
func TestKVPool(t *testing.T) {
	cfg := testutil.TinyConfig("qwen2")
	cfg.Quant, cfg.Embedding, cfg.FeedForward, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.Context = testutil.Q4KM, 256, 512, 8, 4, 4, 8192
	path := testutil.TinyModelWith(t, cfg)
	const kvBytes = 8 * 8192 * 256 * 2 * 2
	want := chat(t, loadModel(t, path, func(o *Options) { o.ContextSize = 8192 }), hello, greedy(16))

	logger, loaded := onLoaded()
	e := NewEarlyLoad(context.Background(), testOptions, func(o *Options) { o.ContextSize = 8192; o.Logger = logger })
	w := newEarlyWriter(t, path, e)
	w.write(0, len(w.data))
	waitLoaded(t, loaded)
	m, err := e.Finish(w.f, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if st := e.Stats(); !st.Early {
		t.Fatalf("Stats = %+v, want an early load", st)
	}
	if m.kvGiven < kvBytes/2 || m.kvGiven > kvBytes {
		t.Errorf("%d bytes of the KV cache given back, want most of its %d", m.kvGiven, kvBytes)
	}
	checkNoHugeMarks(t)
	if got := chat(t, m, hello, greedy(16)); !slices.Equal(got.tokens, want.tokens) {
		t.Errorf("loaded early, the model answers %v, want %v", got.tokens, want.tokens)
	}
}

// TestKVPoolRelease checks both ends of the pool's life: released once
// touched, or before (the load outran the low-priority touch), its pages
// are unmapped by the time release returns, before llama.cpp maps its
// cache, which may take the same addresses.
func TestKVPoolRelease(t *testing.T) {
	const n = 64 << 20
	pooled := func() bool {
		return slices.ContainsFunc(readSmaps(t), func(v vma) bool { return v.size == n && v.flags["hg"] })
	}
	p := newKVPool(n)
	for deadline := time.Now().Add(30 * time.Second); !pooled(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no mapping of %d bytes marked for huge pages within 30 s: the pool is not where the test looks", n)
		}
	}
	p.release()
	if pooled() {
		t.Error("a released pool is still mapped")
	}
	p = newKVPool(n)
	p.release()
	if pooled() {
		t.Error("a pool released at once is mapped")
	}
	// Its touch, queued on the idle thread before done, finds it
	// released and maps nothing.
	done := make(chan struct{})
	idle.Go(func() { close(done) })
	<-done
	if pooled() {
		t.Error("a pool released before its touch ran was mapped after all")
	}
	var nilPool *kvPool
	nilPool.release() // no pool (a header without dimensions): nothing to do
}

// TestKVPoolTouch checks that the pool's pages are all present once
// touched, with MADV_POPULATE_WRITE and with the page-by-page writes of
// kernels before 5.14 (Lambda's 5.10), forced here by an advice the
// kernel refuses.
func TestKVPoolTouch(t *testing.T) {
	const n = 32 << 20
	for _, tc := range []struct {
		name   string
		advice int
	}{{"populate", populateWrite}, {"writes", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(a int) { populateWrite = a }(populateWrite)
			populateWrite = tc.advice
			p := newKVPool(n)
			done := make(chan struct{})
			idle.Go(func() { close(done) }) // after the touch, on the same thread
			<-done
			i := slices.IndexFunc(readSmaps(t), func(v vma) bool { return v.size == n && v.flags["hg"] })
			if i < 0 {
				t.Fatalf("no mapping of %d bytes marked for huge pages: the pool is not where the test looks", n)
			}
			if rss := readSmaps(t)[i].rss; rss < n {
				t.Errorf("%d of the pool's %d bytes present once touched", rss, n)
			}
			p.release()
		})
	}
}
