package memload_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/memload/memload"
	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/memfd"
	"github.com/memload/memload/s3load"
)

// holdRange is an HTTP transport that holds the body of the GET of the
// range starting at start until open is closed.
type holdRange struct {
	rt    http.RoundTripper
	start string // "bytes=N-"
	open  <-chan struct{}
}

func (h holdRange) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.rt.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet && strings.HasPrefix(r.Header.Get("Range"), h.start) {
		resp.Body = &heldBody{ReadCloser: resp.Body, open: h.open, ctx: r.Context()}
	}
	return resp, err
}

// TestLoadGatedGivesBack checks the default load of a model llama.cpp
// repacks (Q4_K_M), with SHA256 set: llama.cpp repacks under the download
// (gated), the memfd's pages of the weights it repacked are given back
// during the download, as soon as s3load has hashed them
// (s3load.Options.OnRelease), not only once it is over; the SHA-256 still
// verifies, and the model answers as one loaded from its path. The
// download's last part is held until a page below the bytes s3load
// released is seen given back (a hole in the memfd where bytes were
// written), so the test waits on that event, not on a timing. That the
// pages are given back only once hashed is s3load's TestOnRelease, whose
// control shows the SHA-256 failing when they go at OnPrefix.
func TestLoadGatedGivesBack(t *testing.T) {
	ctx := context.Background()
	cfg := testutil.TinyConfig("qwen2")
	cfg.Quant, cfg.Embedding, cfg.FeedForward = testutil.Q4KM, 256, 512
	path := testutil.TinyModelWith(t, cfg)
	model, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Put(ctx, "models", "gated.gguf", model); err != nil {
		t.Fatal(err)
	}
	ref := loadFromPath(t, path, true)
	want := greedyAnswer(t, ref)
	ref.Close()

	size := int64(len(model))
	last := (size - 1) / part * part
	open := make(chan struct{})
	hc := &http.Client{
		Transport:     holdRange{rt: http.DefaultTransport.(*http.Transport).Clone(), start: fmt.Sprintf("bytes=%d-", last), open: open},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer hc.CloseIdleConnections()
	client := server.Client(func(o *s3.Options) { o.HTTPClient = hc })

	var file atomic.Pointer[memfd.File]
	var released atomic.Int64
	givenAt := int64(-1) // the first hole seen below the bytes released
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		defer close(open)
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			f := file.Load()
			if f == nil {
				continue
			}
			if hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE); err == nil && hole < released.Load() {
				givenAt = hole
				return
			}
		}
	}()
	m, st, err := memload.Load(ctx, client, "s3://models/gated.gguf", func(o *memload.Options) {
		o.SHA256 = sha256Hex(model)
		o.S3Options = []func(*s3load.Options){func(so *s3load.Options) {
			so.PartSize, so.Concurrency, so.StallTimeout = part, 4, 2*time.Minute
			so.OnPrefix = func(w io.WriterAt, _ int64) { file.Store(w.(*memfd.File)) }
			so.OnRelease = func(_ io.WriterAt, n int64) { released.Store(n) }
		}}
		o.LLMOptions = []func(*llm.Options){func(lo *llm.Options) { lo.Threads, lo.ContextSize = 1, 512 }}
	})
	<-watched
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	t.Log(st)
	if givenAt < 0 {
		t.Errorf("no page of the memfd was given back before the download's last part (bytes %d-)", last)
	}
	if !st.Model.Early || !st.Model.Gated || st.Model.Fallback != "" {
		t.Errorf("Stats.Model = %+v: want a gated early load", st.Model)
	}
	if !strings.Contains(st.Download.Verified, "SHA-256") {
		t.Errorf("download verified with %q: want SHA-256", st.Download.Verified)
	}
	if m.GivenBack() <= 0 {
		t.Errorf("GivenBack = %d: want the pages of repacked weights given back", m.GivenBack())
	}
	if got := greedyAnswer(t, m); got != want {
		t.Errorf("loaded gated with pages given back, the model answers\n%q\nloaded from its path\n%q", got, want)
	}
}

// holdRanges is an HTTP transport that holds the bodies of the GETs of
// the ranges in held ("bytes=A-B") until open is closed.
type holdRanges struct {
	rt   http.RoundTripper
	held map[string]bool
	open <-chan struct{}
}

func (h holdRanges) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.rt.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet && h.held[r.Header.Get("Range")] {
		resp.Body = &heldBody{ReadCloser: resp.Body, open: h.open, ctx: r.Context()}
	}
	return resp, err
}

// TestLoadGatedOutOfOrder checks that llama.cpp, repacking under the
// download, waits at each repacked tensor for its own bytes only
// (s3load.Options.OnPart, llm.EarlyLoad.WrittenRange), not for every byte
// before it in the file: a part inside token_embd.weight, which the file
// holds before the layers' matrices and llama.cpp maps without reading
// it, is held until llama.cpp has loaded the model. A gate on the
// bytes in place from the start would wait for them at the first layer's
// first repacked matrix, and this test a minute before it fails.
func TestLoadGatedOutOfOrder(t *testing.T) {
	ctx := context.Background()
	cfg := testutil.TinyConfig("qwen2")
	cfg.Quant, cfg.Embedding, cfg.FeedForward = testutil.Q4KM, 256, 512
	path := testutil.TinyModelWith(t, cfg)
	model, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Put(ctx, "models", "out-of-order.gguf", model); err != nil {
		t.Fatal(err)
	}
	ref := loadFromPath(t, path, true)
	want := greedyAnswer(t, ref)
	ref.Close()

	// The generated file holds its header (25 KiB), then token_embd.weight
	// (Q4_K, bytes 25792-173248), output_norm, output (Q6_K), then the
	// layers: part 1 lies inside token_embd.weight, which llama.cpp maps
	// and does not read while it loads, and before every tensor it
	// repacks.
	size := int64(len(model))
	hs, err := llm.HeaderSize(bytes.NewReader(model), size)
	if err != nil {
		t.Fatal(err)
	}
	ranges, err := llm.ReadOrder(bytes.NewReader(model), size)
	if err != nil {
		t.Fatal(err)
	}
	if hs > part || ranges[0][0] != hs || ranges[0][1] < 2*part {
		t.Fatalf("header of %d bytes, first tensors at %v: part 1 does not lie among the first tensors, the test would prove nothing", hs, ranges[0])
	}
	held := map[string]bool{fmt.Sprintf("bytes=%d-%d", part, 2*part-1): true}
	open := make(chan struct{})
	hc := &http.Client{
		Transport:     holdRanges{rt: http.DefaultTransport.(*http.Transport).Clone(), held: held, open: open},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer hc.CloseIdleConnections()
	client := server.Client(func(o *s3.Options) { o.HTTPClient = hc })
	logger := slog.New(&onMessage{msg: "llm: loaded", fn: func() { close(open) }})
	timeout := time.AfterFunc(time.Minute, func() { logger.Info("llm: loaded") }) // the failure's end
	defer timeout.Stop()

	m, st, err := memload.Load(ctx, client, "s3://models/out-of-order.gguf", func(o *memload.Options) {
		o.SHA256 = sha256Hex(model)
		o.S3Options = []func(*s3load.Options){func(so *s3load.Options) {
			so.PartSize, so.Concurrency, so.StallTimeout = part, 8, 2*time.Minute
		}}
		o.LLMOptions = []func(*llm.Options){func(lo *llm.Options) { lo.Threads, lo.ContextSize, lo.Logger = 1, 512, logger }}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	t.Log(st)
	if !st.Model.Early || !st.Model.Gated || st.Model.Fallback != "" || !st.Model.End.Before(st.LastByte) {
		t.Errorf("Stats.Model = %+v, last byte %v: want a gated early load that ended before the held parts %v came", st.Model, st.LastByte, held)
	}
	if got := greedyAnswer(t, m); got != want {
		t.Errorf("loaded gated out of order, the model answers\n%q\nloaded from its path\n%q", got, want)
	}
}
