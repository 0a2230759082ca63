package s3load_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/s3load"
)

// recordRanges is an HTTP transport that records the Range of every GET in
// the order they are sent, and holds the bodies of all but the first
// part's until release is closed, so that the test decides when the other
// parts may finish.
type recordRanges struct {
	rt      http.RoundTripper
	release <-chan struct{}
	mu      sync.Mutex
	ranges  []string
}

func (r *recordRanges) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet {
		r.mu.Lock()
		r.ranges = append(r.ranges, req.Header.Get("Range"))
		r.mu.Unlock()
	}
	resp, err := r.rt.RoundTrip(req)
	if err == nil && req.Method == http.MethodGet && !strings.HasPrefix(req.Header.Get("Range"), "bytes=0-") {
		resp.Body = &heldBody{ReadCloser: resp.Body, release: r.release, ctx: req.Context()}
	}
	return resp, err
}

type heldBody struct {
	io.ReadCloser
	release <-chan struct{}
	ctx     context.Context
}

func (b *heldBody) Read(p []byte) (int, error) {
	select {
	case <-b.release:
		return b.ReadCloser.Read(p)
	case <-b.ctx.Done():
		return 0, b.ctx.Err()
	}
}

// TestOrder checks that the parts holding the ranges Options.Order asks
// for are fetched before the others not yet started, that the bytes are
// right, and that Order sees only the prefix in place.
func TestOrder(t *testing.T) {
	const part, parts = 64 << 10, 16
	ctx := context.Background()
	data := testutil.RandomBytes(parts*part-100, 7) // the last part is short
	if err := server.Put(ctx, "models", "order.bin", data); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	rec := &recordRanges{rt: http.DefaultTransport.(*http.Transport).Clone(), release: release}
	hc := &http.Client{Transport: rec, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer hc.CloseIdleConnections()

	var calls []int64
	f, st, err := s3load.New(client(func(o *s3.Options) { o.HTTPClient = hc })).Load(ctx, "s3://models/order.bin", func(o *s3load.Options) {
		// One part at a time, so that the GETs' order is the order
		// they were chosen in.
		o.PartSize, o.Concurrency = part, 1
		o.Order = func(prefix io.ReaderAt, n, size int64) [][2]int64 {
			calls = append(calls, n)
			if size != int64(len(data)) {
				t.Errorf("Order told size %d, want %d", size, len(data))
			}
			got := make([]byte, n+1)
			k, err := prefix.ReadAt(got, 0)
			if int64(k) != n || err != io.EOF || !bytes.Equal(got[:k], data[:n]) {
				t.Errorf("reading past the prefix of %d bytes: %d bytes, %v, want the prefix and io.EOF", n, k, err)
			}
			close(release)
			// The last part, then part 9 twice and a range outside the
			// object, which are ignored.
			return [][2]int64{{int64(len(data)) - 10, int64(len(data)) + 5}, {9*part + 1, 9*part + 2}, {9 * part, 10 * part}, {-5, 0}, {1 << 40, 1<<40 + 1}}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the loaded bytes differ from the object's (%v)", err)
	}
	if len(calls) != 1 || calls[0] != part {
		t.Errorf("Order called with prefixes %v, want once with the first part (%d)", calls, part)
	}
	rng := func(i int64) string {
		end := min((i+1)*part, int64(len(data))) - 1
		return "bytes=" + itoa(i*part) + "-" + itoa(end)
	}
	// Part 0 first, then the parts asked for, then the rest in order.
	want := []string{rng(0), rng(15), rng(9)}
	for i := int64(1); i < parts-1; i++ {
		if i != 9 {
			want = append(want, rng(i))
		}
	}
	if !slices.Equal(rec.ranges, want) || st.Parts != parts {
		t.Errorf("GETs in the order\n%v\nwant\n%v (%d parts, want %d)", rec.ranges, want, st.Parts, parts)
	}
}

// TestOrderNeverAnswers checks that an Order that never names ranges
// holds nothing up: every part is fetched from the start, and Order is
// asked at each growth of the prefix short of the whole object.
func TestOrderNeverAnswers(t *testing.T) {
	const part = 64 << 10
	ctx := context.Background()
	data := testutil.RandomBytes(5*part, 8)
	if err := server.Put(ctx, "models", "order-none.bin", data); err != nil {
		t.Fatal(err)
	}
	var calls []int64
	f, _, err := s3load.New(client()).Load(ctx, "s3://models/order-none.bin", func(o *s3load.Options) {
		o.PartSize, o.Concurrency = part, 1
		o.Order = func(_ io.ReaderAt, n, _ int64) [][2]int64 {
			calls = append(calls, n)
			return nil
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the loaded bytes differ from the object's (%v)", err)
	}
	if want := []int64{part, 2 * part, 3 * part, 4 * part}; !slices.Equal(calls, want) {
		t.Errorf("Order called with prefixes %v, want %v", calls, want)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestOrderVerified checks that parts fetched out of the file's order, on
// several connections at once, still make the right bytes and pass the
// SHA-256 and S3 checksum checks, which take the parts in the file's
// order.
func TestOrderVerified(t *testing.T) {
	const part = 64 << 10
	ctx := context.Background()
	data := testutil.RandomBytes(40*part+123, 9)
	if err := server.Put(ctx, "models", "order-verified.bin", data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	f, st, err := s3load.New(client()).Load(ctx, "s3://models/order-verified.bin", func(o *s3load.Options) {
		o.PartSize, o.Concurrency, o.SHA256 = part, 4, hex.EncodeToString(sum[:])
		o.Order = func(_ io.ReaderAt, n, size int64) [][2]int64 {
			// The second half backwards, a part at a time.
			var r [][2]int64
			for off := size - 1; off >= size/2; off -= part {
				r = append(r, [2]int64{off, off + 1})
			}
			return r
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the loaded bytes differ from the object's (%v)", err)
	}
	if !strings.Contains(st.Verified, "SHA-256") || st.Parts != 41 {
		t.Errorf("verified %q in %d parts, want SHA-256 in 41", st.Verified, st.Parts)
	}
}
