package s3load_test

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/s3load"
)

// TestLoadReusesConnections checks that loads through the SDK's default
// HTTP client keep a connection per part in flight: that client keeps only
// 10 idle connections per host, so without tuning every load after the
// first dials again (a TCP and a TLS handshake each, on S3).
func TestLoadReusesConnections(t *testing.T) {
	const (
		concurrency = 16
		partSize    = 64 << 10
	)
	uri, _ := putObject(t, 4*concurrency*partSize)
	var dials atomic.Int64
	httpClient := awshttp.NewBuildableClient().WithDialerOptions(func(d *net.Dialer) {
		d.Control = func(string, string, syscall.RawConn) error {
			dials.Add(1)
			return nil
		}
	})
	loader := s3load.New(server.Client(func(o *s3.Options) { o.HTTPClient = httpClient }), func(o *s3load.Options) {
		o.PartSize, o.Concurrency = partSize, concurrency
	})
	const loads = 6
	for range loads {
		f, _, err := loader.Load(context.Background(), uri)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	// Each load has at most concurrency parts and a HeadObject in flight,
	// so the first load's connections could serve all. A few more dials
	// happen when a part starts before a finished one's connection is back
	// in the pool (often, under -race); without tuning, every load after
	// the first dials the 7 connections the SDK's pool of 10 dropped.
	if n, limit := dials.Load(), int64(2*(concurrency+1)); n > limit {
		t.Errorf("%d loads of %d parts, %d at once, dialled %d connections, want at most %d: idle connections are not kept",
			loads, 4*concurrency, concurrency, n, limit)
	}
}

// TestLoadKeepsCustomHTTPClient checks that an HTTP client other than the
// SDK's own is used as it is.
func TestLoadKeepsCustomHTTPClient(t *testing.T) {
	uri, sum := putObject(t, 1<<20)
	var calls atomic.Int64
	c := countingClient{sharedHTTP, &calls}
	loader := s3load.New(server.Client(func(o *s3.Options) { o.HTTPClient = c }), func(o *s3load.Options) {
		o.PartSize = 256 << 10
	})
	f, _, err := loader.Load(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := sha256File(t, f.Path()); got != sum {
		t.Fatalf("SHA-256 %s, want %s", got, sum)
	}
	if calls.Load() < 4 {
		t.Errorf("the custom client carried %d requests, want every part's (4)", calls.Load())
	}
}

// countingClient counts the requests it carries.
type countingClient struct {
	c     *http.Client
	calls *atomic.Int64
}

func (c countingClient) Do(r *http.Request) (*http.Response, error) {
	c.calls.Add(1)
	return c.c.Do(r)
}
