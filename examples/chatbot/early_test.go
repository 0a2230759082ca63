package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/s3load"
)

// earlyPart is the download's part size in these tests: the first part
// holds the tiny model's header (25 KiB) and the start of its weights, the
// other 12 parts the rest.
const earlyPart = 64 << 10

// holdRest is an HTTP transport that holds the body of every GET but the
// first part's until open is closed, so that the test decides when the
// rest of the download may come. It stands in for a link slow enough for
// llama.cpp's load to end first, without betting on timings.
type holdRest struct {
	rt   http.RoundTripper
	open <-chan struct{}
}

func (h holdRest) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.rt.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet && !strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
		resp.Body = &heldBody{ReadCloser: resp.Body, open: h.open, ctx: r.Context()}
	}
	return resp, err
}

type heldBody struct {
	io.ReadCloser
	open <-chan struct{}
	ctx  context.Context
}

func (b *heldBody) Read(p []byte) (int, error) {
	select {
	case <-b.open:
		return b.ReadCloser.Read(p)
	case <-b.ctx.Done():
		return 0, b.ctx.Err()
	}
}

// onMessage is a log handler that calls fn the first time a record with
// message msg is logged at Info or above.
type onMessage struct {
	msg  string
	once sync.Once
	fn   func()
}

func (h *onMessage) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *onMessage) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(h.fn)
	}
	return nil
}
func (h *onMessage) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *onMessage) WithGroup(string) slog.Handler      { return h }

// earlyDownload returns a Loader whose GETs go through a shaped link to m,
// with every part but the first held until open is closed.
func earlyDownload(m *testutil.MinIO, shaper *testutil.Shaper, open <-chan struct{}, sha string, optFns ...func(*s3load.Options)) (*s3load.Loader, *http.Client) {
	hc := &http.Client{
		Transport:     holdRest{rt: http.DefaultTransport.(*http.Transport).Clone(), open: open},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	client := m.Client(func(o *s3.Options) { o.BaseEndpoint, o.HTTPClient = aws.String(shaper.URL), hc })
	return s3load.New(client, func(o *s3load.Options) {
		o.PartSize, o.Concurrency, o.SHA256 = earlyPart, 4, sha
		o.StallTimeout = 30 * time.Second // a held part is not a stalled one
		for _, fn := range optFns {
			fn(o)
		}
	}), hc
}

// earlyOptions are the llama.cpp options of these tests: an early start
// needs NoRepack.
func earlyOptions(logger *slog.Logger) func(*llm.Options) {
	return func(o *llm.Options) { o.Threads, o.ContextSize, o.NoRepack, o.Logger = 1, 512, true, logger }
}

// greedyAnswer is the model's greedy answer to a fixed question.
func greedyAnswer(t *testing.T, m *llm.Model) string {
	t.Helper()
	var b strings.Builder
	st, err := m.Chat(context.Background(), []llm.Message{{Role: llm.RoleUser, Content: "What is a memory file?"}},
		func(s string) error { b.WriteString(s); return nil },
		func(o *llm.ChatOptions) { o.Temperature, o.MaxTokens = 0, 48 })
	if err != nil {
		t.Fatal(err)
	}
	if st.GeneratedTokens < 16 {
		t.Fatalf("only %d tokens generated: too few to compare", st.GeneratedTokens)
	}
	return b.String()
}

// mapped reports whether the process maps the memfd named name.
func mapped(t *testing.T, name string) bool {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(maps, []byte("/memfd:"+name+" "))
}

// TestEarlyLoad checks that a model whose llama.cpp load started when its
// header was in, and ended before the weights came, answers exactly as one
// loaded after the download: greedy, token for token.
func TestEarlyLoad(t *testing.T) {
	ctx := context.Background()
	model, err := os.ReadFile(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	m := testutil.NewMinIO(t)
	createBucket(t, m, "models")
	if err := m.Put(ctx, "models", "early.gguf", model); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(model)
	sha := hex.EncodeToString(sum[:])
	quiet := slog.New(slog.DiscardHandler)

	// The reference: loaded once the download is verified.
	f, _, err := s3load.New(m.Client(), func(o *s3load.Options) { o.SHA256 = sha }).Load(ctx, "s3://models/early.gguf")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := llm.LoadFile(ctx, f, earlyOptions(quiet), func(o *llm.Options) { o.CloseFile = true })
	if err != nil {
		t.Fatal(err)
	}
	want := greedyAnswer(t, ref)
	ref.Close()

	// The answer depends on the weights the early load goes without:
	// had llama.cpp read any of them while it loaded, it would have read
	// zeros.
	zeroed := bytes.Clone(model)
	clear(zeroed[earlyPart:])
	path := filepath.Join(t.TempDir(), "zeroed.gguf")
	if err := os.WriteFile(path, zeroed, 0o644); err != nil {
		t.Fatal(err)
	}
	zm, err := llm.Load(ctx, path, earlyOptions(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if got := greedyAnswer(t, zm); got == want {
		t.Fatalf("a model without its weights past byte %d answers as the whole model: %q", earlyPart, got)
	}
	zm.Close()

	open := make(chan struct{})
	shaper := testutil.NewShaper(t, m.Endpoint, testutil.Link{PerConn: 2e6, FirstByte: 10 * time.Millisecond})
	dl, hc := earlyDownload(m, shaper, open, sha)
	defer hc.CloseIdleConnections()
	logger := slog.New(&onMessage{msg: "llm: loaded", fn: func() { close(open) }})
	em, res, err := loadEarly(ctx, dl, "s3://models/early.gguf", nil, earlyOptions(logger))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Early || res.LlamaEnd.IsZero() || !res.LlamaEnd.Before(res.LastByte) || res.Verified.Before(res.LastByte) {
		t.Errorf("llama.cpp's load %v to %v (early %v), last byte %v, verified %v: want the load to end before the last byte",
			res.LlamaStart, res.LlamaEnd, res.Early, res.LastByte, res.Verified)
	}
	if !strings.Contains(res.Stats.Verified, "SHA-256") {
		t.Errorf("download verified with %q, want SHA-256", res.Stats.Verified)
	}
	if !mapped(t, "early.gguf") {
		t.Error("the early-loaded model does not map the memfd")
	}
	t.Logf("llama.cpp loaded in %v, %v before the last byte; verified %v after it",
		res.LlamaEnd.Sub(res.LlamaStart), res.LastByte.Sub(res.LlamaEnd), res.Verified.Sub(res.LastByte))
	if got := greedyAnswer(t, em); got != want {
		t.Errorf("early-loaded model answers\n%q\nloaded after the download\n%q", got, want)
	}
	em.Close()
	if mapped(t, "early.gguf") {
		t.Error("the memfd is still mapped after the model was closed")
	}
}

// TestEarlyLoadNeverUsed checks that a model loaded early is closed unused
// when its download fails or is cancelled after the load, and that a file
// that is not a model is refused.
func TestEarlyLoadNeverUsed(t *testing.T) {
	model, err := os.ReadFile(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(model)
	m := testutil.NewMinIO(t)
	createBucket(t, m, "models")

	for _, tc := range []struct {
		name string
		data []byte
		sha  string
		// what to do once llama.cpp has loaded the model early: let the
		// download go on, or cancel it
		cancel bool
		want   error
	}{
		{"sha256 mismatch", model, strings.Repeat("ab", 32), false, s3load.ErrChecksum},
		{"cancelled", model, hex.EncodeToString(sum[:]), true, context.Canceled},
		{"not a model", testutil.RandomBytes(len(model), 1), "", false, llm.ErrInvalidModel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := strings.ReplaceAll(tc.name, " ", "-") + ".gguf"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := m.Put(ctx, "models", key, tc.data); err != nil {
				t.Fatal(err)
			}
			fds := testutil.OpenFDs(t)
			shaper := testutil.NewShaper(t, m.Endpoint, testutil.Link{PerConn: 2e6, FirstByte: 10 * time.Millisecond})
			open := make(chan struct{})
			if tc.want == llm.ErrInvalidModel {
				close(open) // no model to wait for
			}
			loadedEarly := false
			logger := slog.New(&onMessage{msg: "llm: loaded", fn: func() {
				loadedEarly = true
				if tc.cancel {
					cancel()
				} else {
					close(open)
				}
			}})
			dl, hc := earlyDownload(m, shaper, open, tc.sha)
			em, res, err := loadEarly(ctx, dl, "s3://models/"+key, nil, earlyOptions(logger))
			if em != nil {
				em.Close()
				t.Fatal("loadEarly returned a model")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if want := tc.want != llm.ErrInvalidModel; loadedEarly != want || !res.LlamaEnd.IsZero() != want {
				t.Errorf("llama.cpp loaded the model early: %v (%v to %v), want %v", loadedEarly, res.LlamaStart, res.LlamaEnd, want)
			}
			if mapped(t, key) {
				t.Error("the memfd is still mapped: the model loaded early was not closed")
			}
			shaper.Close() // and its connections, in this process too
			testutil.CheckFDs(t, fds, hc.CloseIdleConnections)
		})
	}
}

// TestEarlyLoadRestart checks that a model replaced in S3 after llama.cpp
// loaded the first version early is loaded again, from the new version,
// when the download starts over (RestartOnChange).
func TestEarlyLoadRestart(t *testing.T) {
	ctx := context.Background()
	first, err := os.ReadFile(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	// The second version has every weight negated (the tiny model's are
	// all float32): the same size and header, other answers.
	hs, err := llm.HeaderSize(bytes.NewReader(first), int64(len(first)))
	if err != nil {
		t.Fatal(err)
	}
	second := bytes.Clone(first)
	for i := hs + 3; i < int64(len(second)); i += 4 {
		second[i] ^= 0x80
	}
	path := filepath.Join(t.TempDir(), "second.gguf")
	if err := os.WriteFile(path, second, 0o644); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	ref, err := llm.Load(ctx, path, earlyOptions(quiet))
	if err != nil {
		t.Fatal(err)
	}
	want := greedyAnswer(t, ref)
	ref.Close()
	old, err := llm.Load(ctx, tinyModel, earlyOptions(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if got := greedyAnswer(t, old); got == want {
		t.Fatalf("both versions answer %q", got)
	}
	old.Close()

	m := testutil.NewMinIO(t)
	createBucket(t, m, "models")
	if err := m.Put(ctx, "models", "replaced.gguf", first); err != nil {
		t.Fatal(err)
	}
	open := make(chan struct{})
	var putErr error
	logger := slog.New(&onMessage{msg: "llm: loaded", fn: func() {
		// The parts not yet asked for will find another ETag.
		putErr = m.Put(ctx, "models", "replaced.gguf", second)
		close(open)
	}})
	shaper := testutil.NewShaper(t, m.Endpoint, testutil.Link{PerConn: 2e6, FirstByte: 10 * time.Millisecond})
	dl, hc := earlyDownload(m, shaper, open, "", func(o *s3load.Options) { o.RestartOnChange = true })
	defer hc.CloseIdleConnections()
	em, res, err := loadEarly(ctx, dl, "s3://models/replaced.gguf", nil, earlyOptions(logger))
	if putErr != nil {
		t.Fatal(putErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer em.Close()
	if !res.Stats.Restarted || res.Early || res.LlamaStart.Before(res.Verified) {
		t.Errorf("restarted %v, early %v, llama.cpp's load from %v, verified %v: want a load after the restarted download",
			res.Stats.Restarted, res.Early, res.LlamaStart, res.Verified)
	}
	if got := greedyAnswer(t, em); got != want {
		t.Errorf("after the object was replaced the model answers\n%q\nthe new version answers\n%q", got, want)
	}
}
