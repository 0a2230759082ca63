package s3load_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/memfd"
	"github.com/memload/memload/s3load"
)

// The tests in this file load from testutil.HostileS3, a server that
// answers as the broken S3 clones, proxies and gateways in the field do.
// Such servers cannot run here, so it stands in for them.

const hostilePart = 64 << 10

// hostileClient is an S3 client for srv, through hc (nil: the SDK's
// default client), with the SDK's retryer made quick.
func hostileClient(srv *testutil.HostileS3, hc s3.HTTPClient) *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("hostile", "hostile", ""),
		UsePathStyle: true,
		HTTPClient:   hc,
		Retryer: retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxBackoff = 5 * time.Millisecond
			so.RateLimiter = ratelimit.None
		}),
	})
}

// hostileLoad puts an object of size bytes on a HostileS3 that answers as
// answer says, loads it with the options, and returns the loaded bytes.
func hostileLoad(t *testing.T, size int, answer func(*http.Request) testutil.Answer, optFns ...func(*s3load.Options)) ([]byte, s3load.Stats, error) {
	t.Helper()
	srv := testutil.NewHostileS3(t, answer)
	srv.Put("bkt", "model", testutil.RandomBytes(size, uint64(size)))
	hc := awsHTTPClient()
	defer hc.CloseIdleConnections()
	return loadFrom(t, hostileClient(srv, hc), optFns...)
}

func loadFrom(t *testing.T, c s3load.Client, optFns ...func(*s3load.Options)) ([]byte, s3load.Stats, error) {
	t.Helper()
	l := s3load.New(c, func(o *s3load.Options) {
		o.PartSize = hostilePart
		o.Concurrency = 3
		o.MaxAttempts = 3
		o.RetryBackoff = time.Millisecond
		o.StallTimeout = 300 * time.Millisecond
	})
	f, stats, err := l.Load(context.Background(), "s3://bkt/model", optFns...)
	if err != nil {
		return nil, stats, err
	}
	defer f.Close()
	m, merr := f.Map()
	if merr != nil {
		t.Fatal(merr)
	}
	return bytes.Clone(m), stats, nil
}

// getN answers the n-th ranged GET (from 1) with a and every other request
// as S3 does.
func getN(n int64, a testutil.Answer) func(*http.Request) testutil.Answer {
	var seen atomic.Int64
	return func(r *http.Request) testutil.Answer {
		if r.Method == http.MethodGet && seen.Add(1) == n {
			return a
		}
		return testutil.Answer{}
	}
}

// gets answers every GET with a.
func gets(a testutil.Answer) func(*http.Request) testutil.Answer {
	return func(r *http.Request) testutil.Answer {
		if r.Method == http.MethodGet {
			return a
		}
		return testutil.Answer{}
	}
}

func heads(a testutil.Answer) func(*http.Request) testutil.Answer {
	return func(r *http.Request) testutil.Answer {
		if r.Method == http.MethodHead {
			return a
		}
		return testutil.Answer{}
	}
}

// wantErr fails t unless err matches is and mentions each of mention.
func wantErr(t *testing.T, err error, is error, mention ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("load succeeded, want an error matching %v", is)
	}
	if !errors.Is(err, is) {
		t.Errorf("err = %v, want errors.Is %v", err, is)
	}
	for _, s := range mention {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

// A total near math.MaxInt64 in Content-Range sized the checksum table and
// the SHA-256 queue without an overflow check, and panicked.
func TestHugeClaimedSize(t *testing.T) {
	huge := func(r *http.Request) testutil.Answer {
		if r.Method != http.MethodGet {
			return testutil.Answer{}
		}
		var a, b int64
		fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b)
		return testutil.Answer{Header: map[string]string{"Content-Range": fmt.Sprintf("bytes %d-%d/%d", a, b, int64(math.MaxInt64))}}
	}
	sum := func(size int) string {
		s := sha256.Sum256(testutil.RandomBytes(size, uint64(size)))
		return hex.EncodeToString(s[:])
	}
	for _, tt := range []struct {
		name string
		opt  func(*s3load.Options)
		is   error
	}{
		{"checksum", func(*s3load.Options) {}, s3load.ErrBadResponse}, // HeadObject's size differs
		{"SHA256, no HeadObject", func(o *s3load.Options) { o.NoChecksum, o.SHA256 = true, sum(3*hostilePart) }, memfd.ErrInsufficientMemory},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := hostileLoad(t, 3*hostilePart, huge, tt.opt)
			wantErr(t, err, tt.is)
		})
	}
	// LoadTo has no memory check: the second part's true size ends it.
	srv := testutil.NewHostileS3(t, huge)
	srv.Put("bkt", "model", testutil.RandomBytes(3*hostilePart, 1))
	w := &memRW{memWriter{buf: make([]byte, 3*hostilePart)}}
	_, err := s3load.New(hostileClient(srv, awsHTTPClient()), func(o *s3load.Options) {
		o.PartSize, o.NoChecksum, o.SHA256 = hostilePart, true, strings.Repeat("0", 64)
	}).LoadTo(context.Background(), "s3://bkt/model", w)
	if err == nil {
		t.Fatal("LoadTo of a size that the server contradicts succeeded")
	}
}

// A PartSize of math.MaxInt64 overflowed the part count, and a goroutine
// panicked with an index out of range.
func TestHugePartSize(t *testing.T) {
	data := testutil.RandomBytes(3*hostilePart+5, 7)
	s := sha256.Sum256(data)
	for _, sha := range []string{"", hex.EncodeToString(s[:])} {
		srv := testutil.NewHostileS3(t, nil)
		srv.Put("bkt", "model", data)
		got, stats, err := loadFrom(t, hostileClient(srv, awsHTTPClient()), func(o *s3load.Options) {
			o.PartSize, o.SHA256 = math.MaxInt64, sha
		})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) || stats.Parts != 1 || !strings.Contains(stats.Verified, "CRC64NVME") {
			t.Errorf("SHA256 %q: bytes equal %v, stats %+v", sha, bytes.Equal(got, data), stats)
		}
	}
}

// A claimed size sized the bookkeeping before anything checked it: a
// 1 TiB claim with SHA256 set allocated about 125 MiB at once.
func TestClaimedSizeAllocatesNothing(t *testing.T) {
	const part = 1 << 20
	srv := testutil.NewHostileS3(t, func(r *http.Request) testutil.Answer {
		if r.Method == http.MethodGet && strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
			return testutil.Answer{Header: map[string]string{"Content-Range": fmt.Sprintf("bytes 0-%d/%d", part-1, int64(1)<<40)}}
		}
		return testutil.Answer{}
	})
	srv.Put("bkt", "model", testutil.RandomBytes(2*part, 1))
	w := &memRW{memWriter{buf: make([]byte, 2*part)}}
	l := s3load.New(hostileClient(srv, awsHTTPClient()), func(o *s3load.Options) {
		o.PartSize, o.Concurrency, o.NoChecksum, o.SHA256 = part, 1, true, strings.Repeat("0", 64)
	})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := l.LoadTo(context.Background(), "s3://bkt/model", w)
	runtime.ReadMemStats(&after)
	wantErr(t, err, s3load.ErrObjectChanged, "size changed")
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Errorf("a load that fetched 2 MiB of a claimed 1 TiB allocated %d MiB", n>>20)
	}
}

// GETs that all claim a smaller total than HeadObject's Content-Length
// gave a truncated model as success, when the object had no checksum.
func TestSizeDisagreesWithHead(t *testing.T) {
	const size = 3 * hostilePart
	smaller := func(r *http.Request) testutil.Answer {
		switch r.Method {
		case http.MethodHead:
			return testutil.Answer{Header: map[string]string{"X-Amz-Checksum-Crc64nvme": "", "X-Amz-Checksum-Type": ""}}
		case http.MethodGet:
			var a, b int64
			fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b)
			b = min(b, size/2-1)
			return testutil.Answer{Header: map[string]string{
				"Content-Range": fmt.Sprintf("bytes %d-%d/%d", a, b, size/2), "Content-Length": fmt.Sprint(b - a + 1)}}
		}
		return testutil.Answer{}
	}
	_, _, err := hostileLoad(t, size, smaller)
	wantErr(t, err, s3load.ErrBadResponse, fmt.Sprint(size), fmt.Sprint(size/2))
}

// A 416 on the first GET with a HeadObject that has no Content-Length
// gave an empty memfd as success: a missing value was read as 0.
func TestEmptyNeedsHeadSize(t *testing.T) {
	answer := func(r *http.Request) testutil.Answer {
		if r.Method == http.MethodGet {
			return testutil.Answer{Status: http.StatusRequestedRangeNotSatisfiable}
		}
		return testutil.Answer{Header: map[string]string{"Content-Length": ""}}
	}
	_, _, err := hostileLoad(t, 1000, answer)
	wantErr(t, err, s3load.ErrBadResponse, "416")
}

// An empty object answered with 200 and no Content-Range, as some servers
// answer a ranged GET of it, failed.
func TestEmptyAnsweredWith200(t *testing.T) {
	got, stats, err := hostileLoad(t, 0, gets(testutil.Answer{Status: http.StatusOK, Header: map[string]string{"Content-Range": ""}}))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 || stats.Size != 0 {
		t.Errorf("%d bytes, stats %+v", len(got), stats)
	}
	// A 200 whose body is larger than the range asked for is a server
	// that ignores Range: it fails rather than being read whole.
	_, _, err = hostileLoad(t, 3*hostilePart, gets(testutil.Answer{Status: http.StatusOK, Header: map[string]string{"Content-Range": ""}}))
	wantErr(t, err, s3load.ErrBadResponse, "Range")
}

// The status was not checked: a 200 carrying a right-looking Content-Range
// with a body from byte 0 put wrong bytes in place, as success.
func TestStatusChecked(t *testing.T) {
	data := testutil.RandomBytes(3*hostilePart, 3*hostilePart)
	got, stats, err := hostileLoad(t, len(data), getN(2, testutil.Answer{Status: http.StatusOK, Shift: -hostilePart}),
		func(o *s3load.Options) { o.NoChecksum = true })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("a 200 answer to a ranged GET put wrong bytes in place")
	}
	if stats.Retries == 0 {
		t.Error("the 200 was not retried")
	}
	_, _, err = hostileLoad(t, len(data), gets(testutil.Answer{Status: http.StatusOK}), func(o *s3load.Options) { o.NoChecksum = true })
	wantErr(t, err, s3load.ErrBadResponse, "200")
}

// A 307 to another object was followed by the SDK and that object's bytes
// loaded as success, through the SDK's HTTP client and through the
// caller's own.
func TestRedirectNotFollowed(t *testing.T) {
	for _, tt := range []struct {
		name string
		hc   func() s3.HTTPClient
	}{
		{"SDK client", func() s3.HTTPClient { return awshttp.NewBuildableClient() }},
		{"own http.Client", func() s3.HTTPClient { return awsHTTPClient() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var srv *testutil.HostileS3
			srv = testutil.NewHostileS3(t, func(r *http.Request) testutil.Answer {
				if r.URL.Path == "/bkt/model" {
					return testutil.Answer{Status: http.StatusTemporaryRedirect, Header: map[string]string{"Location": srv.URL + "/bkt/other"}}
				}
				return testutil.Answer{}
			})
			srv.Put("bkt", "model", testutil.RandomBytes(2*hostilePart, 1))
			srv.Put("bkt", "other", testutil.RandomBytes(2*hostilePart, 2))
			_, _, err := loadFrom(t, hostileClient(srv, tt.hc()))
			wantErr(t, err, s3load.ErrRedirect, "/bkt/other")
		})
	}
}

// A 301 PermanentRedirect had no sentinel and did not say which region to
// use; S3 sends it in x-amz-bucket-region.
func TestPermanentRedirect(t *testing.T) {
	answer := testutil.Answer{Status: http.StatusMovedPermanently, Header: map[string]string{"X-Amz-Bucket-Region": "eu-west-3"}}
	_, _, err := hostileLoad(t, 1000, func(*http.Request) testutil.Answer { return answer })
	wantErr(t, err, s3load.ErrRedirect, "eu-west-3", "region")
}

// A 416 on a later part (the object shrank and the server ignored
// If-Match) matched no sentinel, so RestartOnChange never fired.
func TestShrunkObject(t *testing.T) {
	_, _, err := hostileLoad(t, 3*hostilePart, getN(3, testutil.Answer{Status: http.StatusRequestedRangeNotSatisfiable}))
	wantErr(t, err, s3load.ErrObjectChanged)
	data := testutil.RandomBytes(3*hostilePart, 3*hostilePart)
	got, stats, err := hostileLoad(t, len(data), getN(3, testutil.Answer{Status: http.StatusRequestedRangeNotSatisfiable}),
		func(o *s3load.Options) { o.RestartOnChange = true })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) || !stats.Restarted {
		t.Errorf("bytes equal %v, Restarted %v", bytes.Equal(got, data), stats.Restarted)
	}
}

// Stalls matched no sentinel, and Stats.Retries was 0 when the first GET
// failed after retrying.
func TestStallSentinelAndRetries(t *testing.T) {
	_, stats, err := hostileLoad(t, 3*hostilePart, gets(testutil.Answer{Delay: 10 * time.Second}))
	wantErr(t, err, s3load.ErrStalled, "StallTimeout")
	if stats.Retries != 2 {
		t.Errorf("Stats.Retries = %d after 3 attempts at the first part, want 2", stats.Retries)
	}
	_, _, err = hostileLoad(t, 3*hostilePart, gets(testutil.Answer{BodyLen: 1000, Hang: true}))
	wantErr(t, err, s3load.ErrStalled, "StallTimeout")
}

// A server trickling bytes never counted as stalled: only the caller's
// deadline ended it. A trickling request is now cut and retried; a load
// that trickles on every try fails with ErrStalled.
func TestTrickleCountsAsStall(t *testing.T) {
	trickle := testutil.Answer{Trickle: 50 * time.Millisecond, TrickleBytes: 100} // 2 KB/s
	data := testutil.RandomBytes(3*hostilePart, 3*hostilePart)
	got, stats, err := hostileLoad(t, len(data), getN(2, trickle))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) || stats.Retries == 0 {
		t.Errorf("after a trickling part: bytes equal %v, %d retries", bytes.Equal(got, data), stats.Retries)
	}

	srv := testutil.NewHostileS3(t, gets(trickle))
	srv.Put("bkt", "model", data)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = s3load.New(hostileClient(srv, awsHTTPClient()), func(o *s3load.Options) {
		o.PartSize, o.MaxAttempts, o.StallTimeout = hostilePart, 2, 300*time.Millisecond
	}).LoadTo(ctx, "s3://bkt/model", &memWriter{buf: make([]byte, len(data))})
	wantErr(t, err, s3load.ErrStalled, "MinSpeed")
}

// A HeadObject without an ETag gave a misleading "ETag differs"; without
// one, the checksum cannot be tied to the version loaded.
func TestHeadWithoutETag(t *testing.T) {
	data := testutil.RandomBytes(2*hostilePart, 2*hostilePart)
	got, stats, err := hostileLoad(t, len(data), heads(testutil.Answer{Header: map[string]string{"ETag": ""}}))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) || stats.Verified != "" || !strings.Contains(stats.Unverified, "ETag") {
		t.Errorf("bytes equal %v, Verified %q, Unverified %q", bytes.Equal(got, data), stats.Verified, stats.Unverified)
	}
	_, _, err = hostileLoad(t, len(data), heads(testutil.Answer{Header: map[string]string{"ETag": ""}}),
		func(o *s3load.Options) { o.RequireChecksum = true })
	wantErr(t, err, s3load.ErrNotVerified, "ETag")
}

// When HeadObject failed or timed out, checksum verification was dropped
// with only a log line: Stats now say so, and RequireChecksum makes it an
// error.
func TestHeadFailureReported(t *testing.T) {
	data := testutil.RandomBytes(2*hostilePart, 2*hostilePart)
	for _, tt := range []struct {
		name string
		a    testutil.Answer
	}{
		{"500", testutil.Answer{Status: http.StatusInternalServerError}},
		{"timeout", testutil.Answer{Delay: 2 * time.Second}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, stats, err := hostileLoad(t, len(data), heads(tt.a))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) || stats.Verified != "" || !strings.Contains(stats.Unverified, "HeadObject") {
				t.Errorf("bytes equal %v, Verified %q, Unverified %q", bytes.Equal(got, data), stats.Verified, stats.Unverified)
			}
			_, _, err = hostileLoad(t, len(data), heads(tt.a), func(o *s3load.Options) { o.RequireChecksum = true })
			wantErr(t, err, s3load.ErrNotVerified, "HeadObject")

			s := sha256.Sum256(data)
			_, stats, err = hostileLoad(t, len(data), heads(tt.a), func(o *s3load.Options) {
				o.RequireChecksum, o.SHA256 = true, hex.EncodeToString(s[:])
			})
			if err != nil || stats.Verified != "SHA-256" {
				t.Errorf("RequireChecksum with SHA256: err %v, Verified %q", err, stats.Verified)
			}
		})
	}
}

// memRW is a memWriter that can be read back, as SHA256 needs.
type memRW struct{ memWriter }

func (w *memRW) ReadAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if off >= int64(len(w.buf)) {
		return 0, io.EOF
	}
	n := copy(p, w.buf[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
