package s3load

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/internal/testutil"
)

// TestRequestsWhileOpening checks that the parts after the first are
// requested while the destination is being opened (for a memfd, while
// its memory is reserved), so that the link carries bytes meanwhile. The
// destination here opens only once the server has seen those requests;
// were they sent after it opened, the load would wait forever, which the
// test's deadline turns into a failure. The server is testutil.HostileS3
// answering as S3 does.
func TestRequestsWhileOpening(t *testing.T) {
	const part, concurrency = 64 << 10, 4
	data := testutil.RandomBytes(10*part+5, 11)
	var ranged atomic.Int64
	seen := make(chan struct{})
	srv := testutil.NewHostileS3(t, func(r *http.Request) testutil.Answer {
		if r.Method == http.MethodGet && r.Header.Get("Range") != "" && !strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
			if ranged.Add(1) == concurrency-1 {
				close(seen)
			}
		}
		return testutil.Answer{}
	})
	srv.Put("bkt", "model", data)
	client := s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
	l := New(client, func(o *Options) { o.PartSize, o.Concurrency = part, concurrency })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dst := &bufferAt{b: make([]byte, len(data))}
	stats, err := l.load(ctx, "s3://bkt/model", l.optionsFor(nil), func(*download) (io.WriterAt, error) {
		select {
		case <-seen: // the other parts are in flight
		case <-ctx.Done():
			t.Errorf("the destination is being opened and the server saw %d of the %d other parts' requests", ranged.Load(), concurrency-1)
		}
		return dst, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.b, data) || stats.Size != int64(len(data)) {
		t.Errorf("loaded bytes differ (Stats.Size %d), want the object's %d", stats.Size, len(data))
	}
}

// bufferAt is an io.WriterAt over a byte slice.
type bufferAt struct{ b []byte }

func (w *bufferAt) WriteAt(p []byte, off int64) (int, error) {
	return copy(w.b[off:], p), nil
}
