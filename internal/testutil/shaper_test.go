package testutil

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/goleak"
)

// The shaper stands in for Lambda's network, which cannot be reached from
// here; these tests check that it is the link it says it is, against a
// real MinIO. Each rate is measured over seconds of transfer, so that a
// busy 2-CPU machine's scheduling (milliseconds) stays well inside the
// bounds: ±2.7 %, i.e. 73-77 MB/s at 75 MB/s.
const shaperTolerance = 0.027

type shaperFixture struct {
	m    *MinIO
	http *http.Client
	size int64
	sum  string
}

func newShaperFixture(t *testing.T, size int64) *shaperFixture {
	t.Helper()
	m := NewMinIO(t)
	ctx := context.Background()
	if err := m.CreateBucket(ctx, "shaped"); err != nil {
		t.Fatal(err)
	}
	sum, err := m.PutRandom(ctx, "shaped", "k", size, 3)
	if err != nil {
		t.Fatal(err)
	}
	f := &shaperFixture{m: m, http: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, size: size, sum: sum}
	t.Cleanup(f.http.CloseIdleConnections)
	return f
}

// get reads bytes [off, off+n) through the shaper (n = 0: the whole
// object), and returns when the response began (its headers) and when its
// last byte arrived.
type got struct {
	sum          string
	bytes        int64
	start, first time.Time // request sent, first body byte read
	firstBytes   int64     // bytes of the first read
	last         time.Time
}

func (f *shaperFixture) get(t *testing.T, s *Shaper, off, n int64) got {
	t.Helper()
	c := f.m.Client(func(o *s3.Options) { o.BaseEndpoint, o.HTTPClient = aws.String(s.URL), f.http })
	in := &s3.GetObjectInput{Bucket: aws.String("shaped"), Key: aws.String("k")}
	if n > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	}
	g := got{start: time.Now()}
	out, err := c.GetObject(context.Background(), in)
	if err != nil {
		t.Error(err)
		return g
	}
	defer out.Body.Close()
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for {
		k, err := out.Body.Read(buf)
		if k > 0 {
			if g.first.IsZero() {
				g.first, g.firstBytes = time.Now(), int64(k)
			}
			h.Write(buf[:k])
			g.bytes += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Error(err)
			return g
		}
	}
	g.last = time.Now()
	g.sum = hex.EncodeToString(h.Sum(nil))
	return g
}

// rateOK logs a measured rate and reports whether it is within the
// tolerance of want.
func rateOK(t *testing.T, what string, bytes int64, d time.Duration, want float64) bool {
	t.Helper()
	rate := float64(bytes) / d.Seconds()
	ok := rate >= want*(1-shaperTolerance) && rate <= want*(1+shaperTolerance)
	t.Logf("%s: %.1f MB/s, want %.1f-%.1f (ratio %.3f)", what, rate/1e6, want*(1-shaperTolerance)/1e6, want*(1+shaperTolerance)/1e6, rate/want)
	return ok
}

// measureAttempts is how many times a timed measurement is taken before
// it fails: the machine's other work (the test binary runs beside other
// packages' tests on 2 CPUs) can starve MinIO or the client for a second,
// which no link would do. The bounds themselves stay as tight.
const measureAttempts = 3

// measure runs one timed measurement until it reports true, up to
// measureAttempts times, and fails the test if it never does.
func measure(t *testing.T, what string, once func() bool) {
	t.Helper()
	for i := 1; i <= measureAttempts; i++ {
		if once() {
			return
		}
		t.Logf("%s: attempt %d of %d out of bounds", what, i, measureAttempts)
	}
	t.Errorf("%s: out of bounds in %d attempts", what, measureAttempts)
}

func TestShaperAccuracy(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds of shaped transfers")
	}
	f := newShaperFixture(t, 256<<20) // 3.6 s at 75 MB/s

	t.Run("one GET at a 75 MB/s per-connection cap", func(t *testing.T) {
		measure(t, "one GET", func() bool {
			s := NewShaper(t, f.m.Endpoint, Link{PerConn: 75e6})
			g := f.get(t, s, 0, 0)
			if g.sum != f.sum || g.bytes != f.size {
				t.Fatalf("read %d bytes with SHA-256 %s, want %d with %s", g.bytes, g.sum, f.size, f.sum)
			}
			if st := s.Stats(); st.Requests != 1 || st.Bytes != f.size || st.Slow != 0 {
				t.Errorf("Stats = %+v, want 1 request, %d bytes, none slow", st, f.size)
			}
			return rateOK(t, "one GET", g.bytes-g.firstBytes, g.last.Sub(g.first), 75e6)
		})
	})

	t.Run("four GETs share a 75 MB/s aggregate", func(t *testing.T) {
		measure(t, "4 GETs together", func() bool {
			s := NewShaper(t, f.m.Endpoint, Link{Rate: 75e6})
			first, bytes, last := f.parallel(t, s, 4)
			t.Logf("link idle %v", s.Stats().Idle)
			return rateOK(t, "4 GETs together", bytes, last.Sub(first), 75e6)
		})
	})

	t.Run("burst at the peak, then the sustained rate", func(t *testing.T) {
		l := Link{Peak: 300e6, Burst: 100e6, Rate: 75e6}
		// 0.44 s at 300 MB/s, draining the burst at 225 MB/s, then 1.80 s at
		// 75 MB/s: 2.24 s for 268 MB.
		ceiling := l.Ceiling(f.size)
		measure(t, "4 GETs, as a share of the ceiling", func() bool {
			s := NewShaper(t, f.m.Endpoint, l)
			first, bytes, last := f.parallel(t, s, 4)
			return rateOK(t, "4 GETs, as a share of the ceiling", bytes, last.Sub(first), float64(f.size)/(ceiling-l.FirstByte).Seconds())
		})
	})

	t.Run("every GET 5x slower", func(t *testing.T) {
		measure(t, "a slow GET", func() bool {
			s := NewShaper(t, f.m.Endpoint, Link{PerConn: 40e6, SlowShare: 1, SlowFactor: 5})
			g := f.get(t, s, 0, 16<<20) // 2.1 s at 8 MB/s
			return rateOK(t, "a slow GET", g.bytes-g.firstBytes, g.last.Sub(g.first), 8e6)
		})
	})
}

// parallel reads the object as n concurrent ranged GETs and returns when
// the first body byte arrived, how many bytes came after that first read,
// and when the last byte arrived: the link's part, without the time
// MinIO and the client take to start.
func (f *shaperFixture) parallel(t *testing.T, s *Shaper, n int64) (first time.Time, bytes int64, last time.Time) {
	t.Helper()
	part := f.size / n
	gots := make([]got, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { gots[i] = f.get(t, s, i*part, part) })
	}
	wg.Wait()
	for _, g := range gots {
		if g.bytes != part {
			t.Fatalf("a GET read %d bytes, want %d", g.bytes, part)
		}
		if g.last.After(last) {
			last = g.last
		}
		if first.IsZero() || g.first.Before(first) {
			first, bytes = g.first, f.size-g.firstBytes
		}
	}
	return first, bytes, last
}

func TestShaperFirstByteAndSlowShare(t *testing.T) {
	f := newShaperFixture(t, 1<<20)
	l := Link{FirstByte: 30 * time.Millisecond, SlowShare: 0.25, SlowFactor: 5, Seed: 7}
	const n = 24
	// The same draws as the shaper's: which GETs are slow is fixed by Seed.
	rng := mrand.New(mrand.NewPCG(l.Seed, l.Seed^0x51de))
	wantSlow := 0
	for range n {
		if rng.Float64() < l.SlowShare {
			wantSlow++
		}
	}
	if wantSlow == 0 || wantSlow == n {
		t.Fatalf("seed %d draws %d slow of %d: pick a seed that makes both kinds", l.Seed, wantSlow, n)
	}
	measure(t, "first bytes", func() bool {
		s := NewShaper(t, f.m.Endpoint, l)
		var slow, fast []time.Duration
		for range n {
			before := s.Stats().Slow
			g := f.get(t, s, 0, 1024)
			ttfb := g.first.Sub(g.start)
			if s.Stats().Slow > before {
				slow = append(slow, ttfb)
			} else {
				fast = append(fast, ttfb)
			}
		}
		if st := s.Stats(); st.Slow != wantSlow || st.Requests != n || len(slow) != wantSlow {
			t.Fatalf("Stats = %+v after %d GETs, want %d slow as Seed draws them", st, n, wantSlow)
		}
		// Lower bounds are exact (the shaper never answers early): an
		// error at once. The upper ones only catch a delay applied twice,
		// and a busy machine can exceed them.
		ok := true
		for _, d := range fast {
			if d < l.FirstByte {
				t.Errorf("first byte after %v, before %v", d, l.FirstByte)
			}
			if d > 2*l.FirstByte {
				t.Logf("first byte after %v, want %v-%v", d, l.FirstByte, 2*l.FirstByte)
				ok = false
			}
		}
		for _, d := range slow {
			want := 5 * l.FirstByte
			if d < want {
				t.Errorf("slow GET's first byte after %v, before %v", d, want)
			}
			if d > 2*want {
				t.Logf("slow GET's first byte after %v, want %v-%v", d, want, 2*want)
				ok = false
			}
		}
		return ok
	})
}

func TestShaperCloseEndsResponses(t *testing.T) {
	f := newShaperFixture(t, 8<<20)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fds := OpenFDs(t)
	s, err := StartShaper(f.m.Endpoint, Link{PerConn: 1e6}) // 8 s for the object
	if err != nil {
		t.Fatal(err)
	}
	c := f.m.Client(func(o *s3.Options) { o.BaseEndpoint, o.HTTPClient = aws.String(s.URL), f.http })
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("shaped"), Key: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, out.Body); read <- err }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v with a response in flight", d)
	}
	if err := <-read; err == nil {
		t.Error("the response in flight ended cleanly after Close, want an error")
	}
	out.Body.Close()
	s.Close() // twice is fine
	CheckFDs(t, fds, f.http.CloseIdleConnections, f.m.CloseIdleConnections)
}

func TestStartShaperRejectsBadLinks(t *testing.T) {
	for _, l := range []Link{{Rate: -1}, {SlowShare: 2, SlowFactor: 5}, {SlowShare: 0.1}} {
		if s, err := StartShaper("http://127.0.0.1:1", l); err == nil {
			s.Close()
			t.Errorf("StartShaper(%+v) succeeded, want an error", l)
		}
	}
	if _, err := LinkNamed("lambda"); err == nil {
		t.Error(`LinkNamed("lambda") succeeded, want an error listing the names`)
	}
	for _, l := range Links() {
		if got, err := LinkNamed(l.Name); err != nil || got != l {
			t.Errorf("LinkNamed(%q) = %v, %v", l.Name, got, err)
		}
	}
}

func TestLinkCeiling(t *testing.T) {
	for _, c := range []struct {
		l    Link
		n    int64
		want time.Duration
	}{
		{Link{}, 1e9, 0},
		{Link{Rate: 100e6}, 1e9, 10 * time.Second},
		{Link{Rate: 100e6, FirstByte: 30 * time.Millisecond}, 1e9, 10*time.Second + 30*time.Millisecond},
		// Burst-bound: 300 MB at 300 MB/s leaves the bucket 200 MB, enough.
		{Link{Rate: 100e6, Burst: 200e6, Peak: 300e6}, 300e6, time.Second},
		// Rate-bound: (1000-200) MB at 100 MB/s.
		{Link{Rate: 100e6, Burst: 200e6, Peak: 300e6}, 1e9, 8 * time.Second},
	} {
		if got := c.l.Ceiling(c.n); got != c.want {
			t.Errorf("%+v.Ceiling(%d) = %v, want %v", c.l, c.n, got, c.want)
		}
	}
}

// TestLinkQuotaShapes checks the shapes of Lambda's raised bandwidth:
// 625 and 3,000 Mbit/s sustained, after lambda-like's burst, so that a
// 1.1 GB model takes 10.27 s and 2.96 s at best.
func TestLinkQuotaShapes(t *testing.T) {
	lambda, err := LinkNamed("lambda-like")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		rate    float64
		ceiling time.Duration // of 1.1 GB
	}{
		{"lambda-quota-2GB", 78.125e6, 30*time.Millisecond + 10240*time.Millisecond},
		{"lambda-quota-10GB", 375e6, 30*time.Millisecond + 2933333333},
	} {
		l, err := LinkNamed(c.name)
		if err != nil {
			t.Fatal(err)
		}
		if l.Rate != c.rate || l.Burst != lambda.Burst || l.PerConn != lambda.PerConn || l.FirstByte != lambda.FirstByte || l.Peak < l.Rate {
			t.Errorf("%s: %v, want %.0f MB/s after lambda-like's burst (%v), a peak no lower", c.name, l, c.rate/1e6, lambda)
		}
		if got := l.Ceiling(1.1e9); got.Round(time.Millisecond) != c.ceiling.Round(time.Millisecond) {
			t.Errorf("%s: ceiling of 1.1 GB %v, want %v", c.name, got, c.ceiling)
		}
	}
}
