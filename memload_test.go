package memload_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/goleak"

	"github.com/memload/memload/internal/idle"

	"github.com/memload/memload"
	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/memfd"
	"github.com/memload/memload/s3load"
)

// tinyModel is a generated random-weight model shared by the tests: real
// llama.cpp work in milliseconds.
var tinyModel string

// server is the MinIO the examples talk to; the tests start their own.
var server *testutil.MinIO

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// go test without make: the llama.cpp libraries `make llama` installs.
	if os.Getenv(llm.LibraryEnv) == "" {
		if root, err := testutil.RepoRoot(); err == nil {
			platform := map[string]string{"amd64": "linux-x64", "arm64": "linux-arm64"}[runtime.GOARCH]
			os.Setenv(llm.LibraryEnv, filepath.Join(root, ".bin", "llama", platform))
		}
	}
	dir, err := os.MkdirTemp("", "memload-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	tinyModel = filepath.Join(dir, "tiny-qwen2.gguf")
	if err := testutil.WriteModel(tinyModel, testutil.TinyConfig("qwen2")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	if server, err = testutil.StartMinIO(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if server != nil {
			server.Stop()
		}
	}()
	// The examples use the SDK's default configuration, which reads these.
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_S3":         server.Endpoint,
		"AWS_ACCESS_KEY_ID":           server.AccessKey,
		"AWS_SECRET_ACCESS_KEY":       server.SecretKey,
		"AWS_REGION":                  server.Region,
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	} {
		os.Setenv(k, v)
	}
	model, err := os.ReadFile(tinyModel)
	if err == nil {
		err = server.CreateBucket(ctx, "models")
	}
	if err == nil {
		err = server.Put(ctx, "models", "tiny.gguf", model)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	// MinIO's end closes the connections s3load keeps idle for the
	// examples' SDK clients, and their goroutines end.
	server.Stop()
	server = nil
	if code == 0 {
		// llm's low-priority thread lives as long as the process.
		if err := goleak.Find(goleak.IgnoreAnyFunction(idle.Worker)); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	return code
}

// part is the download's part size in these tests: the first part holds
// the tiny model's header (25 KiB) and the start of its weights, the other
// 12 parts the rest.
const part = 64 << 10

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

// heldClient returns an S3 client of m whose GETs go through a shaped link,
// with every part but the first held until open is closed.
// closeAll closes the link and its connections, in this process too.
func heldClient(t *testing.T, m *testutil.MinIO, open <-chan struct{}) (client *s3.Client, closeAll func()) {
	t.Helper()
	shaper := testutil.NewShaper(t, m.Endpoint, testutil.Link{PerConn: 2e6, FirstByte: 10 * time.Millisecond})
	hc := &http.Client{
		Transport:     holdRest{rt: http.DefaultTransport.(*http.Transport).Clone(), open: open},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	closeAll = func() { shaper.Close(); hc.CloseIdleConnections() }
	t.Cleanup(closeAll)
	return m.Client(func(o *s3.Options) { o.BaseEndpoint, o.HTTPClient = aws.String(shaper.URL), hc }), closeAll
}

// options are the Load options of these tests: small parts, a held part is
// not a stalled one, one llama.cpp thread, and an early start (NoRepack).
func options(sha string, logger *slog.Logger, s3Opts ...func(*s3load.Options)) func(*memload.Options) {
	return func(o *memload.Options) {
		o.SHA256 = sha
		o.S3Options = append([]func(*s3load.Options){func(so *s3load.Options) {
			so.PartSize, so.Concurrency, so.StallTimeout = part, 4, 30*time.Second
		}}, s3Opts...)
		o.LLMOptions = []func(*llm.Options){func(lo *llm.Options) {
			lo.Threads, lo.ContextSize, lo.NoRepack, lo.Logger = 1, 512, true, logger
		}}
	}
}

// greedyAnswer is the model's greedy answer to a fixed question.
func greedyAnswer(t *testing.T, m *llm.Model) string {
	t.Helper()
	var b strings.Builder
	st, err := m.Chat(context.Background(), []llm.Message{{Role: llm.RoleUser, Content: "How fast does the model load?"}},
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

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// loadFromPath loads the model at path as a reference, after a whole file.
func loadFromPath(t *testing.T, path string, repack bool) *llm.Model {
	t.Helper()
	m, err := llm.Load(context.Background(), path, func(o *llm.Options) {
		o.Threads, o.ContextSize, o.NoRepack = 1, 512, !repack
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestLoadEarly checks that a model whose llama.cpp load started when its
// header was in, and ended before the weights came, answers exactly as one
// loaded after the download: greedy, token for token; and that Stats tell
// that timeline.
func TestLoadEarly(t *testing.T) {
	ctx := context.Background()
	model, err := os.ReadFile(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	m := testutil.NewMinIO(t)
	if err := m.CreateBucket(ctx, "models"); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(ctx, "models", "early.gguf", model); err != nil {
		t.Fatal(err)
	}
	ref := loadFromPath(t, tinyModel, false)
	want := greedyAnswer(t, ref)
	ref.Close()

	// The answer depends on the weights the early load goes without:
	// had llama.cpp read any of them while it loaded, it would have read
	// zeros.
	zeroed := bytes.Clone(model)
	clear(zeroed[part:])
	path := filepath.Join(t.TempDir(), "zeroed.gguf")
	if err := os.WriteFile(path, zeroed, 0o644); err != nil {
		t.Fatal(err)
	}
	zm := loadFromPath(t, path, false)
	if got := greedyAnswer(t, zm); got == want {
		t.Fatalf("a model without its weights past byte %d answers as the whole model: %q", part, got)
	}
	zm.Close()

	open := make(chan struct{})
	client, _ := heldClient(t, m, open)
	logger := slog.New(&onMessage{msg: "llm: loaded", fn: func() { close(open) }})
	verified := 0
	em, st, err := memload.Load(ctx, client, "s3://models/early.gguf", options(sha256Hex(model), logger),
		func(o *memload.Options) { o.OnVerified = func() { verified++ } })
	if err != nil {
		t.Fatal(err)
	}
	defer em.Close()
	if !st.Model.Early || st.Model.End.IsZero() || !st.Model.End.Before(st.LastByte) {
		t.Errorf("llama.cpp's load %v to %v (early %v), last byte %v: want the load to end before the last byte",
			st.Model.Start, st.Model.End, st.Model.Early, st.LastByte)
	}
	steps := []time.Time{st.Start, st.FirstByte, st.LastByte, st.Verified, st.Ready}
	for i := 1; i < len(steps); i++ {
		if steps[i].IsZero() || steps[i].Before(steps[i-1]) {
			t.Errorf("timeline out of order: start, first byte, last byte, verified, ready = %v", steps)
			break
		}
	}
	if !strings.Contains(st.Download.Verified, "SHA-256") || st.Download.Size != int64(len(model)) || verified != 1 {
		t.Errorf("download verified with %q, %d bytes, OnVerified called %d times: want SHA-256, %d bytes, once",
			st.Download.Verified, st.Download.Size, verified, len(model))
	}
	if r := st.ReadyAfterLastByte(); r <= 0 || r != st.Ready.Sub(st.LastByte) {
		t.Errorf("ReadyAfterLastByte = %v, ready %v, last byte %v", r, st.Ready, st.LastByte)
	}
	if st.LinkRate() <= 0 {
		t.Errorf("LinkRate = %v", st.LinkRate())
	}
	if !mapped(t, "early.gguf") {
		t.Error("the early-loaded model does not map the memfd")
	}
	t.Log(st)
	if got := greedyAnswer(t, em); got != want {
		t.Errorf("early-loaded model answers\n%q\nloaded after the download\n%q", got, want)
	}
	em.Close()
	if mapped(t, "early.gguf") {
		t.Error("the memfd is still mapped after the model was closed")
	}
}

// TestLoadRepack checks the default load, with repacking: llama.cpp reads
// every weight while it loads, so the model answers as one loaded from a
// path with repacking, and the memfd's pages it repacked are given back.
func TestLoadRepack(t *testing.T) {
	ctx := context.Background()
	ref := loadFromPath(t, tinyModel, true)
	want := greedyAnswer(t, ref)
	ref.Close()
	m, st, err := memload.Load(ctx, server.Client(), "s3://models/tiny.gguf", func(o *memload.Options) {
		o.LLMOptions = []func(*llm.Options){func(lo *llm.Options) { lo.Threads, lo.ContextSize = 1, 512 }}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if st.Ready.Before(st.Verified) || st.Model.Start.IsZero() || st.Model.End.After(st.Ready) {
		t.Errorf("timeline: verified %v, llama.cpp %v to %v, ready %v", st.Verified, st.Model.Start, st.Model.End, st.Ready)
	}
	if got := greedyAnswer(t, m); got != want {
		t.Errorf("loaded with memload.Load, the model answers\n%q\nloaded from its path\n%q", got, want)
	}
}

// TestLoadFails checks that a load that fails, before or after llama.cpp
// loaded the model early, returns an error matching its cause, no model,
// and leaves no memfd mapped and no descriptor open.
func TestLoadFails(t *testing.T) {
	model, err := os.ReadFile(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	m := testutil.NewMinIO(t)
	if err := m.CreateBucket(context.Background(), "models"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte // nil: no object
		sha  string
		// what to do once llama.cpp has loaded the model early: let the
		// download go on, or cancel it
		cancel    bool
		early     bool // llama.cpp loads the model before the error
		headroom  int64
		want      error
		wantAlso  error
		wantInErr string
	}{
		{name: "sha256 mismatch", data: model, sha: strings.Repeat("ab", 32), early: true, want: s3load.ErrChecksum},
		{name: "cancelled", data: model, sha: sha256Hex(model), cancel: true, early: true, want: context.Canceled},
		{name: "not a model", data: testutil.RandomBytes(len(model), 1), want: llm.ErrInvalidModel},
		{name: "not found", want: s3load.ErrNotFound, wantInErr: "not-found.gguf"},
		{name: "no room for the context", data: model, headroom: 1 << 50, want: s3load.ErrDestination, wantAlso: memfd.ErrInsufficientMemory},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := strings.ReplaceAll(tc.name, " ", "-") + ".gguf"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.data != nil {
				if err := m.Put(ctx, "models", key, tc.data); err != nil {
					t.Fatal(err)
				}
			}
			fds := testutil.OpenFDs(t)
			open := make(chan struct{})
			if !tc.early {
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
			client, closeAll := heldClient(t, m, open)
			em, st, err := memload.Load(ctx, client, "s3://models/"+key, options(tc.sha, logger),
				func(o *memload.Options) { o.Headroom = tc.headroom })
			if em != nil {
				em.Close()
				t.Fatal("Load returned a model")
			}
			if !errors.Is(err, tc.want) || tc.wantAlso != nil && !errors.Is(err, tc.wantAlso) || !strings.Contains(fmt.Sprint(err), tc.wantInErr) {
				t.Errorf("err = %v, want %v (and %v, naming %q)", err, tc.want, tc.wantAlso, tc.wantInErr)
			}
			if loadedEarly != tc.early || !st.Model.End.IsZero() != tc.early || !st.Ready.IsZero() {
				t.Errorf("llama.cpp loaded the model early: %v (%v to %v), want %v; ready %v", loadedEarly, st.Model.Start, st.Model.End, tc.early, st.Ready)
			}
			if mapped(t, key) {
				t.Error("the memfd is still mapped: the model loaded early was not closed")
			}
			closeAll()
			testutil.CheckFDs(t, fds, m.CloseIdleConnections)
		})
	}
}

// TestLoadRestart checks that a model replaced in S3 after llama.cpp
// loaded the first version early is loaded again, from the new version,
// when the download starts over (RestartOnChange).
func TestLoadRestart(t *testing.T) {
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
	ref := loadFromPath(t, path, false)
	want := greedyAnswer(t, ref)
	ref.Close()
	old := loadFromPath(t, tinyModel, false)
	if got := greedyAnswer(t, old); got == want {
		t.Fatalf("both versions answer %q", got)
	}
	old.Close()

	m := testutil.NewMinIO(t)
	if err := m.CreateBucket(ctx, "models"); err != nil {
		t.Fatal(err)
	}
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
	client, _ := heldClient(t, m, open)
	em, st, err := memload.Load(ctx, client, "s3://models/replaced.gguf",
		options("", logger, func(o *s3load.Options) { o.RestartOnChange = true }))
	if putErr != nil {
		t.Fatal(putErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer em.Close()
	if !st.Download.Restarted || st.Model.Early || st.Model.Start.Before(st.Verified) {
		t.Errorf("restarted %v, early %v, llama.cpp's load from %v, verified %v: want a load after the restarted download",
			st.Download.Restarted, st.Model.Early, st.Model.Start, st.Verified)
	}
	if got := greedyAnswer(t, em); got != want {
		t.Errorf("after the object was replaced the model answers\n%q\nthe new version answers\n%q", got, want)
	}
}

// TestEstimateHeadroom checks the estimate grows with the context and
// takes llm's default for none.
func TestEstimateHeadroom(t *testing.T) {
	if d, c := memload.EstimateHeadroom(0), memload.EstimateHeadroom(4096); d != c || c <= 256<<20 {
		t.Errorf("EstimateHeadroom(0) = %d, (4096) = %d: want equal, above 256 MiB (the measured peak)", d, c)
	}
	if memload.EstimateHeadroom(8192) <= memload.EstimateHeadroom(4096) {
		t.Error("the estimate does not grow with the context")
	}
}

// recordGETs is an HTTP transport that records the Range of every GET.
type recordGETs struct {
	rt     http.RoundTripper
	mu     sync.Mutex
	ranges []string
}

func (r *recordGETs) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet {
		r.mu.Lock()
		r.ranges = append(r.ranges, req.Header.Get("Range"))
		r.mu.Unlock()
	}
	return r.rt.RoundTrip(req)
}

// TestLoadReadOrder checks that Load fetches the parts in the order
// llama.cpp loads the tensors (llm.ReadOrder), not the file's: the
// generated model holds each layer's biases last and ffn_up before
// ffn_down, which llama.cpp creates the other way round.
func TestLoadReadOrder(t *testing.T) {
	const part = 16 << 10
	model, err := os.ReadFile(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(model))
	ranges, err := llm.ReadOrder(bytes.NewReader(model), size)
	if err != nil {
		t.Fatal(err)
	}
	// The parts holding the header first, in the file's order, then the
	// parts in the order the ranges first name them, then any left.
	hs, err := llm.HeaderSize(bytes.NewReader(model), size)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	seen := map[int64]bool{}
	add := func(i int64) {
		if !seen[i] {
			seen[i] = true
			want = append(want, fmt.Sprintf("bytes=%d-%d", i*part, min((i+1)*part, size)-1))
		}
	}
	for i := range (hs-1)/part + 1 {
		add(i)
	}
	for _, r := range ranges {
		for i := r[0] / part; i <= (r[1]-1)/part; i++ {
			add(i)
		}
	}
	for i := int64(0); i*part < size; i++ {
		add(i)
	}
	var fileOrder []string
	for i := int64(0); i*part < size; i++ {
		fileOrder = append(fileOrder, fmt.Sprintf("bytes=%d-%d", i*part, min((i+1)*part, size)-1))
	}
	if slices.Equal(want, fileOrder) {
		t.Fatal("llama.cpp's order and the file's fetch the same parts in the same order: the test would prove nothing")
	}

	rec := &recordGETs{rt: http.DefaultTransport.(*http.Transport).Clone()}
	hc := &http.Client{Transport: rec, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer hc.CloseIdleConnections()
	client := server.Client(func(o *s3.Options) { o.HTTPClient = hc })
	m, _, err := memload.Load(context.Background(), client, "s3://models/tiny.gguf", func(o *memload.Options) {
		// One part at a time, so that the GETs' order is the order they
		// were chosen in.
		o.S3Options = []func(*s3load.Options){func(so *s3load.Options) { so.PartSize, so.Concurrency = part, 1 }}
		o.LLMOptions = []func(*llm.Options){func(lo *llm.Options) { lo.Threads, lo.ContextSize = 1, 512 }}
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if !slices.Equal(rec.ranges, want) {
		t.Errorf("GETs in the order\n%v\nwant llama.cpp's\n%v", rec.ranges, want)
	}
}

// TestLoadDefaultHeadroom checks that, without Options.Headroom, Load asks
// the memfd for room for the context the LLM options want: a context no
// machine holds is refused before the download.
func TestLoadDefaultHeadroom(t *testing.T) {
	m, st, err := memload.Load(context.Background(), server.Client(), "s3://models/tiny.gguf", func(o *memload.Options) {
		o.LLMOptions = []func(*llm.Options){func(lo *llm.Options) { lo.ContextSize = 1 << 40 }}
	})
	if m != nil {
		m.Close()
	}
	if !errors.Is(err, memfd.ErrInsufficientMemory) || st.Download.Size != 0 || !st.Model.Start.IsZero() {
		t.Errorf("err = %v, %d bytes downloaded, llama.cpp started %v: want memfd.ErrInsufficientMemory before the download",
			err, st.Download.Size, st.Model.Start)
	}
}

// TestLoadNoLibrary checks that unusable llama.cpp libraries fail the load
// before the download, not after it: nothing is fetched.
func TestLoadNoLibrary(t *testing.T) {
	rec := &recordGETs{rt: http.DefaultTransport.(*http.Transport).Clone()}
	hc := &http.Client{Transport: rec, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer hc.CloseIdleConnections()
	client := server.Client(func(o *s3.Options) { o.HTTPClient = hc })
	m, st, err := memload.Load(context.Background(), client, "s3://models/tiny.gguf", func(o *memload.Options) {
		o.LLMOptions = []func(*llm.Options){func(lo *llm.Options) { lo.Library = t.TempDir() }}
	})
	if m != nil {
		m.Close()
	}
	if !errors.Is(err, llm.ErrLibrary) || len(rec.ranges) != 0 || st.Download.Size != 0 {
		t.Errorf("err = %v after %d GETs, %d bytes: want llm.ErrLibrary before the download", err, len(rec.ranges), st.Download.Size)
	}
}
