package llm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hybridgroup/yzma/pkg/llama"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/memfd"
)

// Tests run llama.cpp for real, on tiny generated models, with one thread:
// faster than two for models this small, and stable on a busy machine.
func testOptions(o *Options) {
	o.Threads = 1
	o.ContextSize = 1024
}

func greedy(n int) func(*ChatOptions) {
	return func(o *ChatOptions) { o.Temperature = 0; o.MaxTokens = n }
}

var hello = []Message{{Role: RoleSystem, Content: "You are terse."}, {Role: RoleUser, Content: "Say hello to the model in memory."}}

func loadModel(t *testing.T, path string, optFns ...func(*Options)) *Model {
	t.Helper()
	m, err := Load(context.Background(), path, append([]func(*Options){testOptions}, optFns...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// memfdCopy returns a memfd holding the file at path.
func memfdCopy(t *testing.T, path string) *memfd.File {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := memfd.New(filepath.Base(path), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return f
}

type transcript struct {
	tokens []int
	pieces []string
	stats  Stats
}

func chat(t *testing.T, m *Model, msgs []Message, optFns ...func(*ChatOptions)) transcript {
	t.Helper()
	var tr transcript
	m.traceToken = func(id int) { tr.tokens = append(tr.tokens, id) }
	defer func() { m.traceToken = nil }()
	st, err := m.Chat(context.Background(), msgs, func(s string) error {
		tr.pieces = append(tr.pieces, s)
		return nil
	}, optFns...)
	if err != nil {
		t.Fatal(err)
	}
	tr.stats = st
	return tr
}

func TestMain(m *testing.M) {
	// go test without make: the libraries `make llama` installs.
	if os.Getenv(LibraryEnv) == "" {
		if root, err := testutil.RepoRoot(); err == nil {
			os.Setenv(LibraryEnv, filepath.Join(root, ".bin", "llama", "linux-"+map[string]string{"amd64": "x64"}[runtime.GOARCH]+map[string]string{"arm64": "arm64"}[runtime.GOARCH]))
		}
	}
	code := m.Run()
	if childDir != "" {
		os.RemoveAll(childDir)
	}
	os.Exit(code)
}

// TestSystemInfo checks that ggml picked a CPU variant with the vector
// instructions that make it fast on this architecture.
func TestSystemInfo(t *testing.T) {
	info := SystemInfo()
	want := map[string]string{"amd64": "AVX2 = 1", "arm64": "NEON = 1"}[runtime.GOARCH]
	if !strings.Contains(info, "CPU variant ") || !strings.Contains(info, want) {
		t.Fatalf("SystemInfo() = %q, want a CPU variant with %s", info, want)
	}
	t.Log(info)
}

// TestMemfdMatchesFile is the point of the package: a model loaded from
// memory answers exactly as the same model loaded from disk.
func TestMemfdMatchesFile(t *testing.T) {
	q4km := testutil.TinyConfig("qwen2")
	q4km.Quant, q4km.Embedding, q4km.FeedForward = testutil.Q4KM, 256, 512
	for name, cfg := range map[string]testutil.ModelConfig{
		"qwen2": testutil.TinyConfig("qwen2"), "llama": testutil.TinyConfig("llama"), "qwen2 Q4_K_M": q4km,
	} {
		t.Run(name, func(t *testing.T) {
			path := testutil.TinyModelWith(t, cfg)
			want := chat(t, loadModel(t, path), hello, greedy(24))
			if len(want.tokens) < 2 {
				t.Fatalf("only %d tokens generated: the comparison means little", len(want.tokens))
			}
			for _, mmap := range []bool{true, false} {
				f := memfdCopy(t, path)
				m, err := LoadFile(context.Background(), f, testOptions, func(o *Options) { o.NoMmap = !mmap; o.CloseFile = true })
				if err != nil {
					t.Fatal(err)
				}
				got := chat(t, m, hello, greedy(24))
				m.Close()
				if !slices.Equal(got.tokens, want.tokens) || !slices.Equal(got.pieces, want.pieces) {
					t.Errorf("mmap=%v: memfd model generated %v %q, file model %v %q", mmap, got.tokens, got.pieces, want.tokens, want.pieces)
				}
				if got.stats.PromptTokens != want.stats.PromptTokens || got.stats.GeneratedTokens != want.stats.GeneratedTokens {
					t.Errorf("mmap=%v: stats %+v, want %+v", mmap, got.stats, want.stats)
				}
			}
		})
	}
}

func TestChatStats(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	if m.LoadDuration() <= 0 || m.Template() != TemplateChatML {
		t.Errorf("LoadDuration %v, Template %q", m.LoadDuration(), m.Template())
	}
	tr := chat(t, m, hello, greedy(10))
	st := tr.stats
	// The ChatML prompt: 3 special tokens per message, 2 for the reply.
	if st.PromptTokens < 10 || st.GeneratedTokens != len(tr.tokens) && st.GeneratedTokens != len(tr.tokens)-1 {
		t.Errorf("stats %+v for %d tokens", st, len(tr.tokens))
	}
	if st.FinishReason == "length" && st.GeneratedTokens != 10 {
		t.Errorf("finished for length after %d tokens", st.GeneratedTokens)
	}
	if st.PromptDuration <= 0 || st.GenerateDuration <= 0 || st.TimeToFirstToken < st.PromptDuration ||
		st.PromptTokensPerSecond() <= 0 || st.GenerateTokensPerSecond() <= 0 {
		t.Errorf("durations: %+v", st)
	}
	// The same seed gives the same sampled answer.
	seeded := func(o *ChatOptions) { o.Seed = 42; o.MaxTokens = 10 }
	a, b := chat(t, m, hello, seeded), chat(t, m, hello, seeded)
	if !slices.Equal(a.tokens, b.tokens) {
		t.Errorf("seed 42 gave %v, then %v", a.tokens, b.tokens)
	}
}

func TestStopString(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "llama"))
	full := strings.Join(chat(t, m, hello, greedy(40)).pieces, "")
	if len(full) < 20 {
		t.Fatalf("answer %q too short to cut", full)
	}
	// A stop string from the middle of the greedy answer cuts it there,
	// and no part of it reaches the callback.
	stop := full[len(full)/2 : len(full)/2+3]
	tr := chat(t, m, hello, greedy(40), func(o *ChatOptions) { o.Stop = []string{stop} })
	got := strings.Join(tr.pieces, "")
	if want := full[:strings.Index(full, stop)]; got != want {
		t.Errorf("with stop %q got %q, want %q", stop, got, want)
	}
	if tr.stats.FinishReason != "stop" {
		t.Errorf("FinishReason %q", tr.stats.FinishReason)
	}
}

func TestCallbackError(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	errStop := errors.New("enough")
	n := 0
	_, err := m.Chat(context.Background(), hello, func(string) error {
		if n++; n == 3 {
			return errStop
		}
		return nil
	}, greedy(50))
	if !errors.Is(err, errStop) || n != 3 {
		t.Errorf("err %v after %d pieces", err, n)
	}
}

func TestCancel(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	t.Run("during generation", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		pieces := 0
		st, err := m.Chat(ctx, hello, func(string) error {
			if pieces++; pieces == 5 {
				cancel()
			}
			return nil
		}, greedy(0))
		if !errors.Is(err, context.Canceled) || pieces > 6 {
			t.Errorf("err %v after %d pieces (%+v)", err, pieces, st)
		}
	})
	t.Run("before the call", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		st, err := m.Chat(ctx, hello, nil, greedy(0))
		if !errors.Is(err, context.Canceled) || st.GeneratedTokens > 1 {
			t.Errorf("err %v, %+v", err, st)
		}
	})
	t.Run("while waiting", func(t *testing.T) {
		m.sem <- struct{}{} // a call in progress
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := m.Chat(ctx, hello, nil, greedy(1))
		<-m.sem
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("then chat again", func(t *testing.T) {
		// A cancelled call leaves nothing behind: the next answer is the
		// same as on a fresh model.
		want := chat(t, loadModel(t, m.path), hello, greedy(8)).tokens
		if got := chat(t, m, hello, greedy(8)).tokens; !slices.Equal(got, want) {
			t.Errorf("after cancellations %v, fresh model %v", got, want)
		}
	})
}

// TestCancelPrompt cancels the evaluation of a long prompt: llama.cpp's
// abort callback stops it within a graph operation, well before it ends.
func TestCancelPrompt(t *testing.T) {
	cfg := testutil.TinyConfig("llama")
	cfg.Embedding, cfg.FeedForward, cfg.Layers, cfg.Heads, cfg.KVHeads = 512, 2048, 8, 8, 8
	m := loadModel(t, testutil.TinyModelWith(t, cfg), func(o *Options) { o.ContextSize = 2048; o.BatchSize = 2048 })
	long := []Message{{Role: RoleUser, Content: strings.Repeat("memory mapped files ", 120)}}

	// Each call evaluates the whole prompt: none of it is reused.
	whole := func(o *ChatOptions) { o.NoPrefixReuse = true }
	start := time.Now()
	st := chat(t, m, long, greedy(1), whole).stats
	full := time.Since(start)
	if full < 200*time.Millisecond {
		t.Skipf("the prompt takes only %v: too fast to cancel halfway", full)
	}
	ctx, cancel := context.WithTimeout(context.Background(), full/10)
	defer cancel()
	start = time.Now()
	_, err := m.Chat(ctx, long, nil, greedy(1), whole)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || took > full/2 {
		t.Errorf("err %v after %v; the %d-token prompt takes %v", err, took, st.PromptTokens, full)
	}
}

func TestConcurrentChats(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	want := strings.Join(chat(t, m, hello, greedy(12)).pieces, "")
	var wg sync.WaitGroup
	got := make([]string, 4)
	for i := range got {
		wg.Go(func() {
			var b strings.Builder
			_, err := m.Chat(context.Background(), hello, func(s string) error { b.WriteString(s); return nil }, greedy(12))
			if err != nil {
				t.Error(err)
			}
			got[i] = b.String()
		})
	}
	wg.Wait()
	for i, g := range got {
		if g != want {
			t.Errorf("caller %d got %q, want %q", i, g, want)
		}
	}
}

func TestClose(t *testing.T) {
	m := loadModel(t, testutil.TinyModel(t, "qwen2"))
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := m.Chat(context.Background(), hello, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Chat after Close: %v", err)
	}
}

func TestContextFull(t *testing.T) {
	path := testutil.TinyModel(t, "qwen2")
	m := loadModel(t, path, func(o *Options) { o.ContextSize = 64 })
	long := []Message{{Role: RoleUser, Content: strings.Repeat("overflowing ", 80)}}
	if _, err := m.Chat(context.Background(), long, nil); !errors.Is(err, ErrContextFull) {
		t.Errorf("long prompt: %v", err)
	}
	// The last token sampled needs no room in the context.
	st, err := m.Chat(context.Background(), hello, nil, greedy(0))
	if err != nil || st.FinishReason == "length" && st.PromptTokens+st.GeneratedTokens != 64+1 {
		t.Errorf("%+v, %v", st, err)
	}
}

func TestTemplateOverride(t *testing.T) {
	cfg := testutil.TinyConfig("qwen2")
	cfg.Template = "{{ unknown }}"
	path := testutil.TinyModelWith(t, cfg)
	if _, err := Load(context.Background(), path, testOptions); !errors.Is(err, ErrUnknownTemplate) {
		t.Fatalf("unknown template: %v", err)
	}
	for _, name := range []string{TemplateChatML, TemplateDeepSeekR1, TemplateLlama3, testutil.Llama3Template} {
		m := loadModel(t, path, func(o *Options) { o.Template = name })
		chat(t, m, hello, greedy(2))
	}
}

func TestGeneratedTemplates(t *testing.T) {
	for _, tc := range []struct {
		src, want string
		markers   []string
		bos       bool
	}{
		{testutil.ChatMLTemplate, TemplateChatML, []string{"<|im_start|>", "<|im_end|>"}, false},
		{testutil.DeepSeekR1Template, TemplateDeepSeekR1, []string{"<｜User｜>", "<｜Assistant｜>", "<think>"}, true},
		{testutil.Llama3Template, TemplateLlama3, []string{"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}, true},
	} {
		cfg := testutil.TinyConfig("qwen2")
		cfg.Template = tc.src
		m := loadModel(t, testutil.TinyModelWith(t, cfg))
		if m.Template() != tc.want {
			t.Errorf("template %q, want %q", m.Template(), tc.want)
		}
		// The template's markers are single tokens, and the BOS token is
		// added where the family wants it, as with the real models.
		for _, s := range tc.markers {
			if ids := llama.Tokenize(m.vocab, s, false, true); len(ids) != 1 {
				t.Errorf("%s: %q is %d tokens", tc.want, s, len(ids))
			}
		}
		if ids := llama.Tokenize(m.vocab, "x", true, true); (len(ids) == 2) != tc.bos {
			t.Errorf("%s: \"x\" with BOS is %v", tc.want, ids)
		}
		chat(t, m, []Message{{Role: RoleUser, Content: "Hi"}}, greedy(1))
	}
}

func TestBadModels(t *testing.T) {
	good, err := os.ReadFile(testutil.TinyModel(t, "qwen2"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"text":           []byte("this is not a model\n"),
		"ELF":            []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
		"half a model":   good[:len(good)/2],
		"header only":    good[:4096],
		"one byte short": good[:len(good)-1],
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(context.Background(), write(name, b), testOptions)
			if !errors.Is(err, ErrInvalidModel) {
				t.Errorf("Load: %v, want ErrInvalidModel", err)
			}
			f, err := memfd.New(name, int64(max(len(b), 1)))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.WriteAt(b, 0)
			if len(b) == 0 {
				// A memfd cannot be empty: one zero byte.
				f.WriteAt([]byte{0}, 0)
			}
			if _, err := LoadFile(context.Background(), f, testOptions); !errors.Is(err, ErrInvalidModel) {
				t.Errorf("LoadFile: %v, want ErrInvalidModel", err)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		if _, err := Load(context.Background(), filepath.Join(dir, "missing"), testOptions); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load: %v", err)
		}
	})
	t.Run("unknown architecture", func(t *testing.T) {
		// A valid GGUF llama.cpp refuses: an error, not an abort, that
		// carries llama.cpp's reason in its own words, from its log.
		bad := strings.Replace(string(good), "qwen2", "qwen9", 1)
		_, err := Load(context.Background(), write("qwen9", []byte(bad)), testOptions)
		if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), "llama.cpp could not load it: unknown model architecture: 'qwen9'") {
			t.Errorf("Load: %v, want ErrInvalidModel with llama.cpp's reason", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Load(ctx, write("good", good), testOptions); !errors.Is(err, context.Canceled) {
			t.Errorf("Load: %v", err)
		}
	})
}

func TestCloseFile(t *testing.T) {
	path := testutil.TinyModel(t, "llama")
	for _, mmap := range []bool{false, true} {
		f := memfdCopy(t, path)
		m, err := LoadFile(context.Background(), f, testOptions, func(o *Options) { o.NoMmap = !mmap; o.CloseFile = true })
		if err != nil {
			t.Fatal(err)
		}
		if f.Fd() != ^uintptr(0) {
			t.Errorf("mmap=%v: memfd still open after the load", mmap)
		}
		chat(t, m, hello, greedy(2)) // mapped pages outlive the descriptor
		m.Close()
	}
}

func TestLogger(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	h := &recordHandler{fn: func(r slog.Record) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, r.Message)
	}}
	loadModel(t, testutil.TinyModel(t, "qwen2"), func(o *Options) { o.Logger = slog.New(h) })
	mu.Lock()
	defer mu.Unlock()
	if !slices.ContainsFunc(lines, func(s string) bool { return strings.HasPrefix(s, "llama.cpp: ") }) ||
		!slices.Contains(lines, "llm: loaded") {
		t.Errorf("log lacks llama.cpp's lines or the load: %q", lines)
	}
}

type recordHandler struct{ fn func(slog.Record) }

func (h *recordHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error { h.fn(r); return nil }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h *recordHandler) WithGroup(string) slog.Handler                 { return h }

// TestPrefixReuse has a conversation of several turns twice: reusing the KV
// cache of the common start of each prompt, and evaluating every prompt
// whole. The greedy answers are the same, and with reuse each turn after
// the first evaluates only what is new.
//
// It runs on F32 models and on Q4_K_M ones, which llama.cpp repacks: their
// kernels round a token's values differently with the batch it is in, so
// with random weights (whose logits are near ties) a cache filled in other
// batches than a fresh evaluation's changes a greedy answer within a few
// tokens. That is what chunkEnds prevents; a BatchSize of 16 also splits
// prompts at the batch limit.
func TestPrefixReuse(t *testing.T) {
	for _, tc := range []struct {
		name, arch string
		quant      testutil.Quant
		batch      int
	}{
		{"qwen2 F32", "qwen2", testutil.F32, 512},
		{"llama F32", "llama", testutil.F32, 512},
		{"qwen2 Q4_K_M", "qwen2", testutil.Q4KM, 512},
		{"llama Q4_K_M", "llama", testutil.Q4KM, 512},
		{"qwen2 Q4_K_M batch 16", "qwen2", testutil.Q4KM, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testutil.TinyConfig(tc.arch)
			if tc.quant != testutil.F32 {
				cfg.Quant, cfg.Embedding, cfg.FeedForward = tc.quant, 256, 512
			}
			path := testutil.TinyModelWith(t, cfg)
			batch := func(o *Options) { o.BatchSize = tc.batch }
			converse := func(m *Model, optFns ...func(*ChatOptions)) ([][]int, []Stats) {
				msgs := []Message{{Role: RoleSystem, Content: strings.Repeat("You answer questions about memory files. ", 10)}}
				var answers [][]int
				var stats []Stats
				for i := range 5 {
					msgs = append(msgs, Message{Role: RoleUser, Content: fmt.Sprintf("Question %d: where is the model?", i)})
					tr := chat(t, m, msgs, append([]func(*ChatOptions){greedy(24)}, optFns...)...)
					answers, stats = append(answers, tr.tokens), append(stats, tr.stats)
					msgs = append(msgs, Message{Role: RoleAssistant, Content: strings.Join(tr.pieces, "")})
				}
				return answers, stats
			}
			want, wantSt := converse(loadModel(t, path, batch), func(o *ChatOptions) { o.NoPrefixReuse = true })
			m := loadModel(t, path, batch)
			got, gotSt := converse(m)
			for i := range want {
				if !slices.Equal(got[i], want[i]) {
					t.Errorf("turn %d: with reuse %v, without %v", i, got[i], want[i])
				}
				if wantSt[i].CachedTokens != 0 {
					t.Errorf("turn %d without reuse: %d tokens cached", i, wantSt[i].CachedTokens)
				}
				if i > 0 && (gotSt[i].CachedTokens < gotSt[i-1].PromptTokens/2 || gotSt[i].CachedTokens >= gotSt[i].PromptTokens) {
					t.Errorf("turn %d with reuse: %d of %d prompt tokens cached, after a %d-token prompt",
						i, gotSt[i].CachedTokens, gotSt[i].PromptTokens, gotSt[i-1].PromptTokens)
				}
				t.Logf("turn %d: %d prompt tokens, %d cached", i, gotSt[i].PromptTokens, gotSt[i].CachedTokens)
			}
			// A different conversation on the same model reuses only what
			// it shares (the template's start) and answers as a fresh model.
			fresh := chat(t, loadModel(t, path, batch), hello, greedy(24)).tokens
			if after := chat(t, m, hello, greedy(24)); !slices.Equal(after.tokens, fresh) {
				t.Errorf("after the conversation %v, fresh %v", after.tokens, fresh)
			}
		})
	}
}
