package llm

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/memload/memload/internal/idle"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/memfd"
)

// earlyWriter writes a model into a memfd as a download does, telling an
// EarlyLoad of its progress: the bytes up to end, then, once next is
// closed, the rest.
type earlyWriter struct {
	t    *testing.T
	data []byte
	f    *memfd.File
	e    *EarlyLoad
	// verify makes onDemand tell e that each step is verified.
	verify bool
}

func newEarlyWriter(t *testing.T, path string, e *EarlyLoad) *earlyWriter {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := memfd.New("early.gguf", int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &earlyWriter{t: t, data: b, f: f, e: e}
}

// write writes bytes [from, to) in 4 KiB pieces, reporting each.
func (w *earlyWriter) write(from, to int) {
	for off := from; off < to; off += 4 << 10 {
		end := min(off+4<<10, to)
		if _, err := w.f.WriteAt(w.data[off:end], int64(off)); err != nil {
			w.t.Error(err)
			return
		}
		w.e.Written(w.f, int64(end))
	}
}

// onLoaded returns a logger that closes the returned channel once a model
// is loaded.
func onLoaded() (*slog.Logger, <-chan struct{}) {
	loaded := make(chan struct{})
	closed := false
	return slog.New(&recordHandler{fn: func(r slog.Record) {
		if r.Message == "llm: loaded" && !closed {
			closed = true
			close(loaded)
		}
	}}), loaded
}

// waitLoaded waits for llama.cpp's early load; a minute without it is a
// hang, not slowness.
func waitLoaded(t *testing.T, loaded <-chan struct{}) {
	t.Helper()
	select {
	case <-loaded:
	case <-time.After(time.Minute):
		t.Fatal("llama.cpp's early load did not end within a minute of the header's arrival")
	}
}

// TestEarlyLoad writes a model into a memfd while an EarlyLoad loads it:
// the header first, then, only once llama.cpp's load has ended, the
// weights. The greedy answers match those of a model loaded after the
// writing, for qwen2 and llama models: llama.cpp computes from the weights
// written after its load (random weights, so a page it had read while
// still empty would change the answer).
func TestEarlyLoad(t *testing.T) {
	for _, arch := range []string{"qwen2", "llama"} {
		t.Run(arch, func(t *testing.T) {
			path := testutil.TinyModel(t, arch)
			noRepack := func(o *Options) { o.NoRepack = true }
			want := chat(t, loadModel(t, path, noRepack), hello, greedy(16))

			logger, loaded := onLoaded()
			e := NewEarlyLoad(context.Background(), testOptions, noRepack, func(o *Options) { o.Logger = logger })
			w := newEarlyWriter(t, path, e)
			header, err := HeaderSize(bytes.NewReader(w.data), int64(len(w.data)))
			if err != nil {
				t.Fatal(err)
			}
			// The header, and the 64 KiB past it HeaderSize may read, are
			// enough for llama.cpp's load; the rest comes after it.
			first := min(int(header)+64<<10, len(w.data))
			if len(w.data)-first < len(w.data)/2 {
				t.Fatalf("the model's header and 64 KiB are %d of its %d bytes: too few weights come after the load", first, len(w.data))
			}
			fds := testutil.OpenFDs(t)
			w.write(0, first)
			waitLoaded(t, loaded)
			w.write(first, len(w.data))
			m, err := e.Finish(w.f, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			st := e.Stats()
			if !st.Early || st.Start.IsZero() || st.End.Before(st.Start) {
				t.Errorf("Stats = %+v, want an early load", st)
			}
			if w.f.Fd() != ^uintptr(0) {
				t.Error("Finish left the memfd open")
			}
			if got := chat(t, m, hello, greedy(16)); !slices.Equal(got.tokens, want.tokens) {
				t.Errorf("loaded early, the model answers %v, want %v", got.tokens, want.tokens)
			}
			m.Close()
			testutil.CheckFDs(t, fds)
		})
	}
}

// TestEarlyLoadAfter checks the loads that cannot start early: with
// NoMmap llama.cpp reads every weight while it loads, so Finish loads
// the model after the writing, and the answers are those of LoadFile.
func TestEarlyLoadAfter(t *testing.T) {
	path := testutil.TinyModel(t, "qwen2")
	noMmap := func(o *Options) { o.NoMmap = true }
	want := chat(t, loadModel(t, path, noMmap), hello, greedy(16))
	e := NewEarlyLoad(context.Background(), testOptions, noMmap)
	w := newEarlyWriter(t, path, e)
	w.write(0, len(w.data))
	m, err := e.Finish(w.f, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if st := e.Stats(); st.Early || st.Start.IsZero() {
		t.Errorf("Stats = %+v, want a load after the writing", st)
	}
	if again, err := e.Finish(w.f, nil); again != nil || err == nil {
		t.Errorf("a second Finish = %v, %v; want an error", again, err)
	}
	if got := chat(t, m, hello, greedy(16)); !slices.Equal(got.tokens, want.tokens) {
		t.Errorf("the model answers %v, want %v", got.tokens, want.tokens)
	}
}

// TestEarlyLoadUnused checks that a model loaded early is never handed out
// when the writing fails or starts over in another file, and that a file
// that is not a model is refused.
func TestEarlyLoadUnused(t *testing.T) {
	path := testutil.TinyModel(t, "qwen2")
	noRepack := func(o *Options) { o.NoRepack = true }
	want := chat(t, loadModel(t, path, noRepack), hello, greedy(16))

	t.Run("writing failed", func(t *testing.T) {
		fds := testutil.OpenFDs(t)
		logger, loaded := onLoaded()
		e := NewEarlyLoad(context.Background(), testOptions, noRepack, func(o *Options) { o.Logger = logger })
		w := newEarlyWriter(t, path, e)
		w.write(0, len(w.data)/2)
		waitLoaded(t, loaded)
		failed := errors.New("the download failed")
		m, err := e.Finish(nil, failed)
		if m != nil || !errors.Is(err, failed) {
			t.Fatalf("Finish = %v, %v; want no model and %v", m, err, failed)
		}
		if st := e.Stats(); st.Early || st.End.IsZero() {
			t.Errorf("Stats = %+v, want a load, not handed out", st)
		}
		w.f.Close()
		if maps, err := os.ReadFile("/proc/self/maps"); err != nil || strings.Contains(string(maps), "memfd:early.gguf") {
			t.Errorf("the model loaded early is still mapped (%v)", err)
		}
		testutil.CheckFDs(t, fds)
	})

	t.Run("started over", func(t *testing.T) {
		e := NewEarlyLoad(context.Background(), testOptions, noRepack)
		first := newEarlyWriter(t, path, e)
		first.write(0, len(first.data)/2)
		second := newEarlyWriter(t, path, e)
		second.write(0, len(second.data))
		first.f.Close()
		m, err := e.Finish(second.f, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if e.Stats().Early {
			t.Error("the model loaded from the first file was handed out")
		}
		if got := chat(t, m, hello, greedy(16)); !slices.Equal(got.tokens, want.tokens) {
			t.Errorf("the model answers %v, want %v", got.tokens, want.tokens)
		}
	})

	t.Run("not a model", func(t *testing.T) {
		e := NewEarlyLoad(context.Background(), testOptions, noRepack)
		dir := t.TempDir()
		junk := dir + "/junk.gguf"
		if err := os.WriteFile(junk, testutil.RandomBytes(1<<20, 1), 0o600); err != nil {
			t.Fatal(err)
		}
		w := newEarlyWriter(t, junk, e)
		w.write(0, len(w.data))
		if m, err := e.Finish(w.f, nil); m != nil || !errors.Is(err, ErrInvalidModel) {
			t.Errorf("Finish = %v, %v; want %v", m, err, ErrInvalidModel)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		e := NewEarlyLoad(ctx, testOptions, noRepack)
		w := newEarlyWriter(t, path, e)
		w.write(0, 16) // not the whole header: the load waits
		cancel()
		if m, err := e.Finish(nil, ctx.Err()); m != nil || !errors.Is(err, context.Canceled) {
			t.Errorf("Finish = %v, %v; want %v", m, err, context.Canceled)
		}
	})
}

// q4kmModel returns a tiny Q4_K_M model of arch, whose Q4_K matrices
// llama.cpp repacks with AVX2.
func q4kmModel(t *testing.T, arch string) string {
	cfg := testutil.TinyConfig(strings.Fields(arch)[0])
	cfg.Quant, cfg.Embedding, cfg.FeedForward = testutil.Q4KM, 256, 512
	return testutil.TinyModelWith(t, cfg)
}

// onDemand writes the model as far as the header and 64 KiB past it,
// then only what llama.cpp, waiting at the gate, asks for: each step is
// written once the gate is seen waiting for it, so llama.cpp surely
// waits for every repacked tensor it reads before the file has it. Once
// the load has ended, it writes the rest. It returns the steps written.
func (w *earlyWriter) onDemand() int {
	w.t.Helper()
	waits, done := make(chan int64), make(chan struct{})
	defer close(done)
	w.e.onWait = func(_, end int64) {
		select {
		case waits <- end:
		case <-done:
		}
	}
	at := min(int(HeaderEnd(w.t, w.data))+64<<10, len(w.data))
	w.write(0, at)
	steps := 0
	for {
		select {
		case end := <-waits:
			if int(end) <= at {
				w.t.Errorf("llama.cpp waits for byte %d, written already", end)
			}
			w.write(at, int(end))
			at, steps = int(end), steps+1
			if w.verify {
				w.e.Verified(end)
			}
		case <-w.e.ended:
			w.write(at, len(w.data))
			return steps
		case <-time.After(time.Minute):
			w.t.Fatal("llama.cpp neither waited nor ended its load within a minute")
		}
	}
}

// HeaderEnd returns where the tensor data of the model in data starts.
func HeaderEnd(t *testing.T, data []byte) int64 {
	t.Helper()
	n, err := HeaderSize(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEarlyLoadGated is the safety proof of the gated early load: a
// Q4_K_M model, whose matrices llama.cpp repacks while it loads, is
// written only as far as llama.cpp waits for, step by step, and answers
// exactly as a model loaded after the writing (greedy tokens, random
// weights: a tensor repacked before its bytes came would change them).
// It runs for qwen2 and llama, with the best CPU variant here and, in a
// child process, with only the AVX2 (haswell) one. The control shows the
// test can fail: without the gate, the answers differ.
func TestEarlyLoadGated(t *testing.T) {
	if v := os.Getenv("MEMLOAD_TEST_VARIANT"); v != "" {
		testEarlyLoadGated(t, v)
		return
	}
	lib, err := openLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	t.Run(lib.variant, func(t *testing.T) { testEarlyLoadGated(t, lib.variant) })
	if lib.variant != "haswell" {
		t.Run("haswell", func(t *testing.T) { runWithVariant(t, lib, "haswell", "TestEarlyLoadGated") })
	}
}

func testEarlyLoadGated(t *testing.T, variant string) {
	lib, err := openLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	if lib.variant != variant {
		t.Fatalf("llama.cpp picked %s, want %s", lib.variant, variant)
	}
	for _, arch := range []string{"qwen2", "llama", "qwen2 tied"} {
		t.Run(arch, func(t *testing.T) {
			path := q4kmModel(t, arch)
			if arch == "qwen2 tied" {
				// token_embd.weight is repacked as the output, and read
				// from the mapping as the input: its pages must stay.
				cfg := testutil.TinyConfig("qwen2")
				cfg.Quant, cfg.Embedding, cfg.FeedForward = testutil.Q4KM, 256, 512
				path = testutil.TiedModelWith(t, cfg)
			}
			want := chat(t, loadModel(t, path, func(o *Options) { o.KeepPages = true }), hello, greedy(24))

			fds := testutil.OpenFDs(t)
			e := NewEarlyLoad(context.Background(), testOptions)
			w := newEarlyWriter(t, path, e)
			w.verify = true
			steps := w.onDemand()
			m, err := e.Finish(w.f, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			st := e.Stats()
			t.Logf("%s %s: %d steps, %+v; %d of %d bytes given back", variant, arch, steps, st, m.GivenBack(), len(w.data))
			if !st.Early || !st.Gated || st.Fallback != "" || st.Waits < 3 || st.Waits != steps {
				t.Errorf("Stats = %+v after %d steps; want a gated early load that waited at each", st, steps)
			}
			if m.GivenBack() < int64(len(w.data))/4 {
				t.Errorf("only %d of %d bytes given back", m.GivenBack(), len(w.data))
			}
			if got := chat(t, m, hello, greedy(24)); len(want.tokens) < 8 || !slices.Equal(got.tokens, want.tokens) {
				t.Errorf("loaded through the gate, the model answers %v, want %v", got.tokens, want.tokens)
			}
			m.Close()
			testutil.CheckFDs(t, fds)
		})
	}
	t.Run("control", func(t *testing.T) {
		// Without the gate, llama.cpp repacks the tensors it finds before
		// their bytes come: the same writing gives other answers.
		path := q4kmModel(t, "qwen2")
		want := chat(t, loadModel(t, path), hello, greedy(24))
		gateOff = true
		defer func() { gateOff = false }()
		e := NewEarlyLoad(context.Background(), testOptions)
		w := newEarlyWriter(t, path, e)
		if steps := w.onDemand(); steps != 0 {
			t.Errorf("the gate, turned off, waited %d times", steps)
		}
		m, err := e.Finish(w.f, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if got := chat(t, m, hello, greedy(24)); slices.Equal(got.tokens, want.tokens) {
			t.Errorf("without the gate, the model still answers %v", got.tokens)
		}
	})
}

// TestEarlyLoadFallback makes the gate's guard doubt, through lines
// injected into llama.cpp's log as llama.cpp starts loading: a weight
// buffer whose reads are not announced makes llama.cpp wait for the whole
// file before it reads anything; a repack buffer whose size the announced
// tensors do not add up to makes the load end and run again after the
// last byte. Either way the model answers as one loaded after the
// writing, and Stats says why.
func TestEarlyLoadFallback(t *testing.T) {
	path := q4kmModel(t, "qwen2")
	want := chat(t, loadModel(t, path), hello, greedy(24))
	for _, tc := range []struct {
		name, line string
		verify     bool // pages are given back during the load
		early      bool
		why        string
	}{
		{"unannounced buffer", "load_tensors: CPU_KLEIDIAI model buffer size =     1.00 MiB", true, true, "CPU_KLEIDIAI"},
		{"sizes do not add up", "load_tensors:   CPU_REPACK model buffer size =     1.00 MiB", false, false, "CPU_REPACK"},
		// Pages given back during the load cannot be loaded again: the
		// guard's doubt after the load is then an error, never a model
		// computing from zeros.
		{"sizes do not add up, pages given back", "load_tensors:   CPU_REPACK model buffer size =     1.00 MiB", true, false, "CPU_REPACK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEarlyLoad(context.Background(), testOptions)
			e.onStart = func() { logText(ggmlLogWarn-1, tc.line+"\n") }
			w := newEarlyWriter(t, path, e)
			w.verify = tc.verify
			steps := w.onDemand()
			m, err := e.Finish(w.f, nil)
			if !tc.early && tc.verify {
				if m != nil || err == nil || !strings.Contains(err.Error(), "given back") {
					t.Fatalf("Finish = %v, %v; want an error saying pages were given back", m, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			st := e.Stats()
			t.Logf("%d steps, %+v", steps, st)
			if st.Early != tc.early || st.Gated || !strings.Contains(st.Fallback, tc.why) {
				t.Errorf("Stats = %+v; want Early %v, not gated, a Fallback naming %s", st, tc.early, tc.why)
			}
			if tc.early && (steps != 1 || st.Waits != 1) {
				t.Errorf("%d steps, %d waits; want one wait, for the whole file", steps, st.Waits)
			}
			if got := chat(t, m, hello, greedy(24)); !slices.Equal(got.tokens, want.tokens) {
				t.Errorf("the model answers %v, want %v", got.tokens, want.tokens)
			}
		})
	}
}

// TestEarlyLoadGatedUnused ends the writing while llama.cpp waits at the
// gate: the writing fails, is cancelled, or starts over in another file.
// The waiting load ends, nothing of it is handed out or left behind (no
// mapping, descriptor or goroutine), and a writing started over gives the
// model of the second file.
func TestEarlyLoadGatedUnused(t *testing.T) {
	path := q4kmModel(t, "qwen2")
	want := chat(t, loadModel(t, path), hello, greedy(24))
	// firstWait writes up to the first tensor llama.cpp waits for, and
	// returns once it waits there.
	firstWait := func(t *testing.T, w *earlyWriter) {
		t.Helper()
		waits := make(chan int64, 1)
		w.e.onWait = func(_, end int64) {
			select {
			case waits <- end:
			default:
			}
		}
		w.write(0, min(int(HeaderEnd(t, w.data))+64<<10, len(w.data)))
		select {
		case <-waits:
		case <-time.After(time.Minute):
			t.Fatal("llama.cpp did not wait at the gate within a minute")
		}
	}
	for _, how := range []string{"failed", "cancelled", "started over"} {
		t.Run(how, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			fds := testutil.OpenFDs(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			e := NewEarlyLoad(ctx, testOptions)
			w := newEarlyWriter(t, path, e)
			firstWait(t, w)
			var m *Model
			var err error
			switch how {
			case "failed":
				failed := errors.New("the download failed")
				m, err = e.Finish(nil, failed)
				if m != nil || !errors.Is(err, failed) {
					t.Fatalf("Finish = %v, %v; want %v", m, err, failed)
				}
			case "cancelled":
				cancel()
				<-e.ended // the load ends on the cancel alone
				m, err = e.Finish(nil, ctx.Err())
				if m != nil || !errors.Is(err, context.Canceled) {
					t.Fatalf("Finish = %v, %v; want %v", m, err, context.Canceled)
				}
			case "started over":
				second := newEarlyWriter(t, path, e)
				second.write(0, len(second.data))
				<-e.ended // the load of the first file ends on the switch alone
				m, err = e.Finish(second.f, nil)
				if err != nil {
					t.Fatal(err)
				}
				if st := e.Stats(); st.Early {
					t.Errorf("Stats = %+v: the first file's load was handed out", st)
				}
				if got := chat(t, m, hello, greedy(24)); !slices.Equal(got.tokens, want.tokens) {
					t.Errorf("the model answers %v, want %v", got.tokens, want.tokens)
				}
				m.Close()
			}
			w.f.Close()
			if maps, err := os.ReadFile("/proc/self/maps"); err != nil || strings.Contains(string(maps), "memfd:early.gguf") {
				t.Errorf("a model of the writing is still mapped (%v)", err)
			}
			testutil.CheckFDs(t, fds)
			goleak.VerifyNone(t, leaks, goleak.IgnoreAnyFunction(idle.Worker))
		})
	}
}

// TestEarlyLoadGatedRanges checks the gate on bytes written out of order
// (WrittenRange, as s3load's parts fetched in llama.cpp's order land):
// with only the header written (and 64 KiB past it), each time llama.cpp waits it is for its
// tensor's own bytes, not for those before it in the file, and only those
// are written, so it repacks every tensor while the file lacks most of
// its bytes (a prefix gate would have it wait, at a tensor late in the
// file, for everything before it, and this test for a minute). The model
// then answers as one loaded after the writing.
func TestEarlyLoadGatedRanges(t *testing.T) {
	path := q4kmModel(t, "qwen2")
	want := chat(t, loadModel(t, path, func(o *Options) { o.KeepPages = true }), hello, greedy(24))
	e := NewEarlyLoad(context.Background(), testOptions)
	w := newEarlyWriter(t, path, e)
	type wait struct{ off, end int64 }
	waits, done := make(chan wait), make(chan struct{})
	defer close(done)
	e.onWait = func(off, end int64) {
		select {
		case waits <- wait{off, end}:
		case <-done:
		}
	}
	// The header and 64 KiB past it, which HeaderSize reads ahead.
	header := min(int(HeaderEnd(t, w.data))+64<<10, len(w.data))
	w.write(0, header)
	written, steps, lastEnd := int64(header), 0, int64(0)
	for loading := true; loading; {
		select {
		case r := <-waits:
			if r.end <= int64(header) || r.end-r.off >= int64(len(w.data))/4 {
				t.Errorf("llama.cpp waits for bytes [%d, %d): want one tensor's, past the %d bytes written first", r.off, r.end, header)
			}
			if _, err := w.f.WriteAt(w.data[r.off:r.end], r.off); err != nil {
				t.Fatal(err)
			}
			e.WrittenRange(w.f, r.off, r.end)
			written, steps, lastEnd = written+r.end-r.off, steps+1, max(lastEnd, r.end)
		case <-e.ended:
			loading = false
		case <-time.After(time.Minute):
			t.Fatal("llama.cpp neither waited nor ended its load within a minute")
		}
	}
	t.Logf("%d steps, %d of %d bytes written when llama.cpp's load ended, the last waited for ending at %d", steps, written, len(w.data), lastEnd)
	if steps < 3 || written >= int64(len(w.data))*3/4 || lastEnd < int64(len(w.data))/2 {
		t.Errorf("%d waits, %d of %d bytes written, up to byte %d: want llama.cpp to have repacked tensors across the file from their own bytes",
			steps, written, len(w.data), lastEnd)
	}
	w.write(header, len(w.data))
	m, err := e.Finish(w.f, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if st := e.Stats(); !st.Early || !st.Gated || st.Waits != steps {
		t.Errorf("Stats = %+v after %d steps; want a gated early load that waited at each", st, steps)
	}
	if got := chat(t, m, hello, greedy(24)); !slices.Equal(got.tokens, want.tokens) {
		t.Errorf("loaded through the gate from ranges, the model answers %v, want %v", got.tokens, want.tokens)
	}
}
