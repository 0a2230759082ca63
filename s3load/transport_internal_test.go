package s3load

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/internal/testutil"
)

// TestBufferedTLS loads over HTTPS through the SDK's default kind of HTTP
// client, which the loader tunes: the bytes must arrive intact, over TLS
// connections that read their socket through the buffer, and a server the
// client does not trust must still be refused.
func TestBufferedTLS(t *testing.T) {
	m := testutil.NewMinIOTLS(t)
	ctx := context.Background()
	if err := m.CreateBucket(ctx, "models"); err != nil {
		t.Fatal(err)
	}
	want, err := m.PutRandom(ctx, "models", "m.bin", 3<<20+1, 5)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(m.CertFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)

	var buffered, conns int
	for _, trust := range []bool{true, false} {
		hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			if trust {
				tr.TLSClientConfig = &tls.Config{RootCAs: roots}
			}
		})
		l := New(m.Client(func(o *s3.Options) { o.HTTPClient = hc }), func(o *Options) { o.PartSize = 1 << 20 })
		// Look at the connections the tuned transport makes.
		tuned := tuneHTTPClient(hc, l.options.Concurrency).(*http.Client)
		dial := tuned.Transport.(*http.Transport).DialTLSContext
		if dial == nil {
			t.Fatal("the tuned transport has no buffered TLS dialer")
		}
		if trust {
			c, err := dial(ctx, "tcp", strings.TrimPrefix(m.Endpoint, "https://"))
			if err != nil {
				t.Fatal(err)
			}
			conns++
			if tc, ok := c.(*tls.Conn); ok {
				if _, ok := tc.NetConn().(*bufferedConn); ok {
					buffered++
				}
			}
			c.Close()
		}

		f, _, err := l.Load(ctx, "s3://models/m.bin")
		if !trust {
			if err == nil {
				f.Close()
				t.Fatal("a load from a server with an untrusted certificate succeeded")
			}
			if !strings.Contains(err.Error(), "certificate") {
				t.Errorf("err = %v, want a certificate error", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, io.NewSectionReader(f, 0, f.Size()))
		f.Close()
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			t.Fatalf("sha256 %s, want %s", got, want)
		}
	}
	if buffered != conns {
		t.Errorf("%d of %d TLS connections read through the buffer", buffered, conns)
	}
}
