package memload_test

import (
	"context"
	"fmt"
	"io"
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
