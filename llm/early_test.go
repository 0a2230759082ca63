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
// repacking llama.cpp reads every weight while it loads, so Finish loads
// the model after the writing, and the answers are those of LoadFile.
func TestEarlyLoadAfter(t *testing.T) {
	path := testutil.TinyModel(t, "qwen2")
	want := chat(t, loadModel(t, path), hello, greedy(16))
	e := NewEarlyLoad(context.Background(), testOptions)
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
