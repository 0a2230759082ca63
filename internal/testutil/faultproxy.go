package testutil

import (
	"bufio"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is a failure the proxy injects into one response.
type Fault int

// The faults a real S3 connection shows.
const (
	NoFault    Fault = iota
	Reset            // connection reset (RST) after After body bytes
	Error500         // 500 InternalError, before any body
	SlowDown         // 503 SlowDown, before any body
	Stall            // After body bytes, then nothing until the client gives up
	Truncate         // right headers, After body bytes, then a clean close
	WrongRange       // Content-Range shifted one byte, body as the server sent it
	numFaults

	// Corrupt flips one bit of the body at offset After, headers intact:
	// what a broken proxy or NIC does, and TCP does not catch. Not among
	// RandomFaults, which a correct loader must survive byte-exact.
	Corrupt Fault = 100
)

func (f Fault) String() string {
	if f == Corrupt {
		return "corrupt"
	}
	return [...]string{"none", "reset", "500", "503 SlowDown", "stall", "truncate", "wrong Content-Range"}[f]
}

// Injection is what the proxy does to one request.
type Injection struct {
	Fault  Fault
	After  int64  // body bytes sent before Reset, Stall and Truncate
	Before func() // run before the request is forwarded (e.g. to overwrite the object)
}

// FaultProxy is an HTTP proxy on 127.0.0.1 in front of an S3 server that
// injects faults into responses. Point an S3 client's endpoint at URL.
type FaultProxy struct {
	URL string

	upstream string
	decide   func(*http.Request) Injection
	client   *http.Client
	srv      *http.Server
	ln       net.Listener

	mu       sync.Mutex
	counts   map[Fault]int
	stop     chan struct{}
	handlers handlerGroup
}

// NewFaultProxy starts a proxy to upstream (a base URL) that asks decide
// what to do with each request, and stops it when the test ends.
func NewFaultProxy(tb testing.TB, upstream string, decide func(*http.Request) Injection) *FaultProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &FaultProxy{
		URL:      "http://" + ln.Addr().String(),
		upstream: strings.TrimSuffix(upstream, "/"),
		decide:   decide,
		client:   &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}},
		ln:       ln,
		counts:   map[Fault]int{},
		stop:     make(chan struct{}),
	}
	p.srv = &http.Server{Handler: p}
	go p.srv.Serve(ln)
	tb.Cleanup(p.Close)
	return p
}

// Close stops the proxy, ending any stalled responses, and returns once
// every connection it made or took is closed.
func (p *FaultProxy) Close() {
	if p.handlers.close(func() {
		close(p.stop)
		p.srv.Close()
	}) {
		p.client.CloseIdleConnections()
	}
}

// Counts returns how many times each fault was injected.
func (p *FaultProxy) Counts() map[Fault]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Fault]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// RandomFaults returns a decide function that injects a random fault into
// a share rate of ranged GETs, reproducibly for a seed.
func RandomFaults(seed uint64, rate float64) func(*http.Request) Injection {
	var mu sync.Mutex
	rng := mrand.New(mrand.NewPCG(seed, seed^0x5eed))
	return func(r *http.Request) Injection {
		if r.Method != http.MethodGet || r.Header.Get("Range") == "" {
			return Injection{}
		}
		mu.Lock()
		defer mu.Unlock()
		if rng.Float64() >= rate {
			return Injection{}
		}
		return Injection{Fault: Fault(1 + rng.IntN(int(numFaults)-1)), After: rng.Int64N(64 << 10)}
	}
}

func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.handlers.enter() {
		http.Error(w, "proxy closed", http.StatusServiceUnavailable)
		return
	}
	defer p.handlers.leave()
	inj := p.decide(r)
	if inj.Before != nil {
		inj.Before()
	}
	p.mu.Lock()
	p.counts[inj.Fault]++
	p.mu.Unlock()

	switch inj.Fault {
	case Error500:
		writeS3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
		return
	case SlowDown:
		writeS3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
		return
	}

	// Forward with the client's Host header: SigV4 signed it.
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.Host = r.Host
	out.ContentLength = r.ContentLength
	resp, err := p.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()

	if inj.Fault == WrongRange {
		if cr := resp.Header.Get("Content-Range"); cr != "" {
			resp.Header.Set("Content-Range", shiftRange(cr))
		}
	}
	if inj.Fault == NoFault || inj.Fault == WrongRange || inj.Fault == Corrupt || resp.StatusCode >= 300 {
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		body := io.Reader(resp.Body)
		if inj.Fault == Corrupt && resp.StatusCode < 300 {
			body = &flipper{r: resp.Body, at: inj.After}
		}
		io.Copy(w, body)
		return
	}
	p.breakResponse(w, resp, inj)
}

// breakResponse sends resp's headers and inj.After bytes of its body on
// the raw connection, then resets, stalls or closes it.
func (p *FaultProxy) breakResponse(w http.ResponseWriter, resp *http.Response, inj Injection) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 %s\r\n", resp.Status)
	h := resp.Header.Clone()
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	h.Set("Connection", "close")
	h.Write(buf)
	if resp.ContentLength >= 0 {
		fmt.Fprintf(buf, "Content-Length: %d\r\n", resp.ContentLength)
	}
	buf.WriteString("\r\n")
	io.CopyN(buf, resp.Body, min(inj.After, max(resp.ContentLength-1, 0)))
	buf.Flush()
	switch inj.Fault {
	case Reset:
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // close sends RST
		}
	case Stall:
		// Hold the connection open, sending nothing, until the client
		// closes it or the proxy stops.
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, bufio.NewReader(conn)); close(done) }()
		select {
		case <-done:
		case <-p.stop:
		case <-time.After(time.Minute):
		}
	}
}

func writeS3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>fault</RequestId></Error>`, code, msg)
}

// shiftRange turns "bytes A-B/N" into "bytes A+1-B+1/N".
func shiftRange(cr string) string {
	var a, b, n int64
	if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &a, &b, &n); err != nil {
		return cr
	}
	return "bytes " + strconv.FormatInt(a+1, 10) + "-" + strconv.FormatInt(b+1, 10) + "/" + strconv.FormatInt(n, 10)
}

// flipper flips the low bit of the byte at offset at.
type flipper struct {
	r   io.Reader
	at  int64
	off int64
}

func (f *flipper) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 1
	}
	f.off += int64(n)
	return n, err
}
