package s3load

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// tunedClients holds the tuned copy of each SDK HTTP client a load has
// used, per concurrency, so that loads through one s3.Client share their
// connections. Entries are kept for the life of the process: make one
// s3.Client and reuse it, as the SDK advises anyway.
var tunedClients sync.Map // tunedKey → *http.Client

type tunedKey struct {
	base        *awshttp.BuildableClient
	concurrency int
}

// tuneHTTPClient returns the HTTP client for a load's requests.
//
// The SDK's default client (the *awshttp.BuildableClient that s3.New and
// config.LoadDefaultConfig make) keeps at most 10 idle connections per
// host. A load with more parts in flight closes the surplus whenever they
// finish together, and the next parts dial again: a TCP and a TLS
// handshake each, and a new connection's slow start. The copy returned
// keeps enough idle connections for every request of a load, and asks for
// no compression (model weights do not compress, and a gzip body could
// not be written at its offset). It also follows no redirect: the SDK's
// client follows 307 and 308, and a ranged GET that lands on another
// object would put its bytes in place; the 3xx comes back as an
// ErrRedirect instead. It keeps everything else the client was built with
// (CA bundle, proxy, timeouts). Any other HTTP client is returned
// unchanged: whoever made it chose its settings, and a redirect it follows
// is caught afterwards (see redirectedFrom).
func tuneHTTPClient(c s3.HTTPClient, concurrency int) s3.HTTPClient {
	b, ok := c.(*awshttp.BuildableClient)
	if !ok || b == nil {
		return c
	}
	key := tunedKey{b, concurrency}
	if t, ok := tunedClients.Load(key); ok {
		return t.(*http.Client)
	}
	// One idle connection per part in flight, and one for the HeadObject
	// that runs beside the first GET.
	idle := concurrency + 1
	tr := b.GetTransport() // a copy
	tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, idle)
	if tr.MaxIdleConns != 0 { // 0 is no limit
		tr.MaxIdleConns = max(tr.MaxIdleConns, idle)
	}
	tr.DisableCompression = true
	if timeout, ok := b.GetReadTimeout(); ok && timeout > 0 {
		tr.DialContext = readTimeoutDialer(tr.DialContext, timeout)
	}
	if tr.DialTLSContext == nil && tr.DialTLS == nil {
		tr.DialTLSContext = bufferedTLSDialer(tr)
	}
	t := &http.Client{
		Transport:     tr,
		Timeout:       b.GetTimeout(),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	actual, _ := tunedClients.LoadOrStore(key, t)
	return actual.(*http.Client)
}

// readTimeoutDialer sets a read deadline before each read, as the SDK's
// client does for its ReadTimeout option.
func readTimeoutDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error), timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &deadlineConn{Conn: conn, timeout: timeout}, nil
	}
}

type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// tlsReadBuffer sits between a TLS connection and its socket. crypto/tls
// reads one record (16 KiB at most) per system call; through this buffer
// one call takes what a quarter MiB of records brings, which cuts the
// CPU of a load over HTTPS by about a tenth (BENCHMARKS.md).
const tlsReadBuffer = 256 << 10

// bufferedTLSDialer dials as tr would for an HTTPS request without a
// proxy (tr's dialer, TLS config and handshake timeout), with the socket
// read through a tlsReadBuffer. HTTP/1.1 only: S3 speaks nothing else.
func bufferedTLSDialer(tr *http.Transport) func(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	base, timeout := tr.TLSClientConfig, tr.TLSHandshakeTimeout
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := &tls.Config{}
		if base != nil {
			cfg = base.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		cfg.NextProtos = []string{"http/1.1"}
		conn := tls.Client(&bufferedConn{Conn: raw, r: bufio.NewReaderSize(raw, tlsReadBuffer)}, cfg)
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		return conn, nil
	}
}

// bufferedConn reads its connection through a buffer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
