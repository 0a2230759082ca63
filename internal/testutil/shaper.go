package testutil

import (
	"bufio"
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Link is the shape of the network between a client and S3, as a [Shaper]
// imposes it on the responses of a MinIO on 127.0.0.1. It is a stand-in
// for Lambda's network, which cannot be reached from here: the figures of
// the named links come from published measurements (see [Links]), not from
// a function. The zero Link shapes nothing.
type Link struct {
	Name string

	// PerConn caps each response's body in bytes/s: S3 serves one
	// connection at about 85-90 MB/s. 0: no cap.
	PerConn float64
	// FirstByte is how long each response waits before its first byte:
	// S3's time to first byte, not the round trip.
	FirstByte time.Duration
	// Rate caps all responses together in bytes/s once the burst is spent
	// (a token bucket refilled at Rate). 0: no cap.
	Rate float64
	// Burst is the bytes the bucket starts with, and holds at most:
	// sent above Rate, at up to Peak.
	Burst int64
	// Peak caps all responses together in bytes/s at any time, the burst
	// included. 0: no cap.
	Peak float64
	// SlowShare is the share of GETs served SlowFactor times slower (their
	// per-connection cap divided, their first byte delayed that much
	// longer), chosen at random from Seed: the slow-server tail.
	SlowShare  float64
	SlowFactor float64
	Seed       uint64
}

// Links are the named shapes of the benchmarks and the demo. Lambda's
// figures: about 0.6 Gbit/s sustained at every memory size with short
// bursts to about 2.7 Gbit/s (sjakthol/aws-network-benchmark, 2024); S3's:
// 85-90 MB/s per connection and a first byte in tens of milliseconds (AWS's
// S3 performance guide). The 300 and 800 MB/s links keep S3's
// per-connection cap and first byte and widen only the pipe, as a larger
// host would see it.
//
// lambda-quota-2GB and lambda-quota-10GB are Lambda's raised bandwidth
// (since August 2026 a function outside a VPC can ask for it through
// Service Quotas, "Network bandwidth per execution environment"): 625 Mbit/s
// (78 MB/s) at 2 GB of memory and 3,000 Mbit/s (375 MB/s) at 10 GB, after
// the same burst as lambda-like. The burst's 2.7 Gbit/s peak is below
// 375 MB/s, so at 10 GB the peak is the quota: the burst adds nothing.
func Links() []Link {
	const mb = 1e6
	lambda := Link{Name: "lambda-like", PerConn: 90 * mb, FirstByte: 30 * time.Millisecond,
		Rate: 75 * mb, Burst: 300 * mb, Peak: 2.7e9 / 8}
	slow := lambda
	slow.Name, slow.SlowShare, slow.SlowFactor, slow.Seed = "lambda-like-slow-tail", 0.1, 5, 1
	quota2, quota10 := lambda, lambda
	quota2.Name, quota2.Rate = "lambda-quota-2GB", 625e6/8
	quota10.Name, quota10.Rate, quota10.Peak = "lambda-quota-10GB", 3000e6/8, max(lambda.Peak, 3000e6/8)
	return []Link{
		lambda,
		slow,
		quota2,
		quota10,
		{Name: "300MB/s", PerConn: 90 * mb, FirstByte: 30 * time.Millisecond, Rate: 300 * mb},
		{Name: "800MB/s", PerConn: 90 * mb, FirstByte: 30 * time.Millisecond, Rate: 800 * mb},
	}
}

// LinkNamed returns the link of [Links] with that name; "none" is the zero
// Link. The error lists the names.
func LinkNamed(name string) (Link, error) {
	if name == "none" {
		return Link{Name: "none"}, nil
	}
	var names []string
	for _, l := range Links() {
		if l.Name == name {
			return l, nil
		}
		names = append(names, l.Name)
	}
	return Link{}, fmt.Errorf("link %q: want one of none, %s", name, strings.Join(names, ", "))
}

// Ceiling is the shortest time in which the link can deliver n bytes to a
// client with as many connections as it likes: one first byte, then the
// burst at Peak and the rest at Rate. It is what "fills the link" is
// measured against. Infinite bandwidth counts as no time.
func (l Link) Ceiling(n int64) time.Duration {
	s := 0.0
	if l.Peak > 0 {
		s = float64(n) / l.Peak
	}
	if l.Rate > 0 {
		s = max(s, float64(n-min(n, l.Burst))/l.Rate)
	}
	return l.FirstByte + time.Duration(s*float64(time.Second))
}

// String describes the link in a line, for the header of a result.
func (l Link) String() string {
	mbs := func(v float64) string {
		if v == 0 {
			return "unlimited"
		}
		return fmt.Sprintf("%.0f MB/s", v/1e6)
	}
	s := fmt.Sprintf("%s: %s per connection, first byte %v, %s sustained", l.Name, mbs(l.PerConn), l.FirstByte, mbs(l.Rate))
	if l.Burst > 0 {
		s += fmt.Sprintf(" after a burst of %.0f MB", float64(l.Burst)/1e6)
	}
	if l.Peak > 0 {
		s += fmt.Sprintf(", peak %s", mbs(l.Peak))
	}
	if l.SlowShare > 0 {
		s += fmt.Sprintf(", %.0f%% of GETs %gx slower", l.SlowShare*100, l.SlowFactor)
	}
	return s
}

// What a bucket forgives of the time it was not used: tokens accrue up to
// that much of its rate. The scheduler of a busy 2-CPU machine runs a
// goroutine late by milliseconds (the shaper's, MinIO's, the client's),
// which is this machine's noise, not the link's. Within one response that
// is all an unused moment can be (catchUpConn). The aggregate also sees the
// idle time a client leaves, which a real link loses, so it forgives little
// (catchUpLink); instead, while a response is bound by it (its last chunk
// waited on the aggregate, not on its own cap), the aggregate's tokens
// accrue without a cap: the link is full, as a real link stays full from
// its buffers while a program is late, so a late sender sends what it
// missed.
const (
	catchUpConn = 100 * time.Millisecond
	catchUpLink = 10 * time.Millisecond
)

// chunk is how many bytes the shaper sends per reservation: 2.9 ms at
// 90 MB/s, about what a TCP window holds at that rate and a round trip
// within a region. Smaller chunks pace no more truly but cost the shaper
// CPU per chunk (a wait, two splices) that on a 2-CPU machine the client
// and MinIO lose: 64 KiB chunks took 0.70 CPU-s for 1.1 GB at 800 MB/s,
// 256 KiB 0.54 (bench-coldstart, 2026-12-02).
const chunk = 256 << 10

// bucket is a token bucket: tokens accrue at rate, a send takes as many as
// it has bytes, and may take them in advance, waiting until the debt is
// paid. Tokens accrue from the first send on, so that a link is not
// credited with the time before its first byte. A nil bucket never waits.
type bucket struct {
	mu       sync.Mutex
	rate     float64
	capacity float64
	tokens   float64
	last     time.Time // zero until the first send
	bound    int       // responses bound by this bucket: no cap meanwhile
	unused   float64   // tokens lost to the cap: the link left idle
}

func newBucket(rate float64, initial int64, catchUp time.Duration) *bucket {
	if rate <= 0 {
		return nil
	}
	return &bucket{rate: rate, capacity: max(float64(initial), rate*catchUp.Seconds()), tokens: float64(initial)}
}

// accrue adds the tokens earned since the last change; b.mu is held.
func (b *bucket) accrue(now time.Time) {
	if !b.last.IsZero() {
		b.tokens += b.rate * now.Sub(b.last).Seconds()
		if b.bound == 0 && b.tokens > b.capacity {
			b.unused += b.tokens - b.capacity
			b.tokens = b.capacity
		}
	}
	b.last = now
}

// reserve takes n tokens and returns how long to wait before sending them.
func (b *bucket) reserve(n int) time.Duration {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.accrue(time.Now())
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// bind records that a response is, or is no longer, bound by b.
func (b *bucket) bind(was, is bool) {
	if b == nil || was == is {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.accrue(time.Now())
	if is {
		b.bound++
	} else {
		b.bound--
	}
}

// ShaperStats count what a [Shaper] served.
type ShaperStats struct {
	Requests int   // responses forwarded
	Slow     int   // of which served slow
	Bytes    int64 // body bytes handed to clients' connections
	// Idle is how long the aggregate could have sent at its rate and did
	// not, beyond what it forgives, from the first body byte to the last:
	// the capacity a client left unused while it downloaded (0 when the
	// link has no aggregate cap).
	Idle time.Duration
}

// Shaper is an HTTP proxy on 127.0.0.1 in front of an S3 server that
// shapes its responses as a [Link]. Point an S3 client's endpoint at URL.
// It shapes response bodies only; requests pass as they come.
//
// It moves response bodies from the upstream's connection to the
// client's with splice(2), which copies nothing through the shaper: on a
// 2-CPU machine the shaper's CPU is taken from the client and MinIO,
// which on Lambda would not share theirs with the network.
type Shaper struct {
	URL  string
	Link Link

	upstream string // host:port
	idle     chan *upstreamConn
	srv      *http.Server
	peak     *bucket // nil when unlimited
	rate     *bucket

	mu    sync.Mutex
	rng   *mrand.Rand
	stats ShaperStats
	stop  chan struct{}
	wg    sync.WaitGroup
}

// StartShaper starts a shaper to upstream (a base URL) on a free port of
// 127.0.0.1. Stop it with [Shaper.Close].
func StartShaper(upstream string, link Link) (*Shaper, error) {
	if link.PerConn < 0 || link.Rate < 0 || link.Peak < 0 || link.Burst < 0 || link.FirstByte < 0 ||
		link.SlowShare < 0 || link.SlowShare > 1 || (link.SlowShare > 0 && link.SlowFactor < 1) {
		return nil, fmt.Errorf("link %s: rates, burst and first byte must not be negative, SlowShare must be in [0, 1] and SlowFactor at least 1", link)
	}
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme != "http" || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("shaper upstream %q: want http://HOST:PORT", upstream)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Shaper{
		URL:      "http://" + ln.Addr().String(),
		Link:     link,
		upstream: u.Host,
		idle:     make(chan *upstreamConn, 256),
		peak:     newBucket(link.Peak, 0, catchUpLink),
		rate:     newBucket(link.Rate, link.Burst, catchUpLink),
		rng:      mrand.New(mrand.NewPCG(link.Seed, link.Seed^0x51de)),
		stop:     make(chan struct{}),
	}
	s.srv = &http.Server{Handler: s}
	go s.srv.Serve(ln)
	return s, nil
}

// NewShaper starts a shaper for one test and stops it when the test ends.
func NewShaper(tb testing.TB, upstream string, link Link) *Shaper {
	tb.Helper()
	s, err := StartShaper(upstream, link)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Close stops the shaper, ending the responses in flight, and returns once
// every connection it made or took is closed.
func (s *Shaper) Close() {
	s.mu.Lock()
	select {
	case <-s.stop:
		s.mu.Unlock()
		return
	default:
	}
	close(s.stop)
	s.mu.Unlock()
	s.srv.Close()
	s.wg.Wait()
	for {
		select {
		case c := <-s.idle:
			c.Close()
		default:
			return
		}
	}
}

// Stats returns what the shaper has served so far.
func (s *Shaper) Stats() ShaperStats {
	s.mu.Lock()
	st := s.stats
	s.mu.Unlock()
	if b := s.rate; b != nil {
		b.mu.Lock()
		st.Idle = time.Duration(b.unused / b.rate * float64(time.Second))
		b.mu.Unlock()
	}
	return st
}

func (s *Shaper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.wg.Add(1)
	defer s.wg.Done()
	perConn, firstByte := s.Link.PerConn, s.Link.FirstByte
	s.mu.Lock()
	slow := r.Method == http.MethodGet && s.Link.SlowShare > 0 && s.rng.Float64() < s.Link.SlowShare
	s.stats.Requests++
	if slow {
		s.stats.Slow++
		perConn /= s.Link.SlowFactor
		firstByte = time.Duration(float64(firstByte) * s.Link.SlowFactor)
	}
	s.mu.Unlock()

	// Forward with the client's Host header: SigV4 signed it.
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+s.upstream+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.Header.Del("Expect") // the server has answered it, reading r.Body
	out.Host = r.Host
	out.ContentLength = r.ContentLength
	start := time.Now()
	c, resp, err := s.roundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	reusable := false
	defer func() { s.release(c, reusable && !resp.Close) }()
	stop := context.AfterFunc(r.Context(), func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if !s.sleep(r, firstByte-time.Since(start)) {
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = slices.Clone(v)
	}
	w.WriteHeader(resp.StatusCode)
	conn := newBucket(perConn, 0, catchUpConn)
	var peakBound, rateBound bool // this response's last chunk waited on them
	defer func() { s.peak.bind(peakBound, false); s.rate.bind(rateBound, false) }()
	// A body of known length moves by splice; another (chunked, or up to
	// the connection's end) through a buffer, and the connection is not
	// kept: where such a body ends is not told apart from where it broke.
	left := resp.ContentLength
	if r.Method == http.MethodHead {
		left = 0
	}
	spliced := left >= 0
	var buf []byte
	if !spliced {
		buf = make([]byte, chunk)
	}
	for left != 0 {
		var n int
		var err error
		if spliced {
			n = int(min(chunk, left))
		} else if n, err = io.ReadFull(resp.Body, buf); n == 0 {
			return
		}
		dc, dp, dr := conn.reserve(n), s.peak.reserve(n), s.rate.reserve(n)
		d := max(dc, dp, dr)
		s.peak.bind(peakBound, dp > 0 && dp >= d)
		s.rate.bind(rateBound, dr > 0 && dr >= d)
		peakBound, rateBound = dp > 0 && dp >= d, dr > 0 && dr >= d
		if !s.sleep(r, d) {
			return
		}
		s.mu.Lock()
		s.stats.Bytes += int64(n)
		s.mu.Unlock()
		if spliced {
			if err := c.send(w, int64(n)); err != nil {
				return
			}
			left -= int64(n)
		} else if _, werr := w.Write(buf[:n]); werr != nil {
			return
		}
		if err != nil {
			return
		}
	}
	reusable = spliced
}

// upstreamConn is a kept-alive HTTP/1.1 connection to the upstream.
type upstreamConn struct {
	*net.TCPConn
	br     *bufio.Reader
	reused bool
}

// roundTrip sends req on an idle connection to the upstream or a new one,
// and reads the response's header. A request without a body that fails on
// a connection the upstream may have closed meanwhile is sent again on a
// new one.
func (s *Shaper) roundTrip(req *http.Request) (*upstreamConn, *http.Response, error) {
	for {
		c, err := s.conn(req.Context())
		if err != nil {
			return nil, nil, err
		}
		stop := context.AfterFunc(req.Context(), func() { c.SetDeadline(time.Unix(1, 0)) })
		err = req.Write(c)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(c.br, req)
		}
		stop()
		if err == nil {
			return c, resp, nil
		}
		c.Close()
		if !c.reused || req.ContentLength != 0 || req.Context().Err() != nil {
			return nil, nil, err
		}
	}
}

func (s *Shaper) conn(ctx context.Context) (*upstreamConn, error) {
	select {
	case c := <-s.idle:
		c.reused = true
		return c, nil
	default:
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", s.upstream)
	if err != nil {
		return nil, err
	}
	tc := nc.(*net.TCPConn)
	return &upstreamConn{TCPConn: tc, br: bufio.NewReaderSize(tc, 4<<10)}, nil
}

// release keeps c for the next request if it is at a response's end, and
// closes it otherwise.
func (s *Shaper) release(c *upstreamConn, reusable bool) {
	if reusable {
		if err := c.SetDeadline(time.Time{}); err == nil {
			select {
			case s.idle <- c:
				return
			default:
			}
		}
	}
	c.Close()
}

// send moves the body's next n bytes to w: what the header's read left
// buffered, then the rest spliced from the connection to the client's.
func (c *upstreamConn) send(w http.ResponseWriter, n int64) error {
	if b := c.br.Buffered(); b > 0 {
		m := min(int64(b), n)
		if _, err := io.CopyN(w, c.br, m); err != nil {
			return err
		}
		n -= m
	}
	if n == 0 {
		return nil
	}
	rf, ok := w.(io.ReaderFrom) // net/http's: splice to the client's conn
	if !ok {
		_, err := io.CopyN(w, c.TCPConn, n)
		return err
	}
	got, err := rf.ReadFrom(&io.LimitedReader{R: c.TCPConn, N: n})
	if err == nil && got < n {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// sleep waits d, or less when the client goes away or the shaper stops;
// it reports whether to go on. Waits too short for a timer to honour are
// skipped: the buckets keep the debt, and the next wait pays it.
func (s *Shaper) sleep(r *http.Request, d time.Duration) bool {
	if d < 100*time.Microsecond {
		return r.Context().Err() == nil
	}
	return waitFor(r, s.stop, d)
}
