package s3load

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/goleak"

	"github.com/memload/memload/internal/testutil"
)

// FuzzHostileServer loads an object from a testutil.HostileS3 whose every
// answer (status, Content-Range, Content-Length, ETag, body offset and
// length, truncation, delay, trickle, redirect; HeadObject's size, ETag
// and checksum) comes from the fuzzer's bytes. The server stands in for
// the broken S3-compatible servers and proxies of the field. On every
// input the load must return the object's exact bytes or an error that
// matches one of the package's sentinels (or the context's); it must not
// panic or leak a goroutine or a descriptor; and it must never return
// wrong bytes as success when a checksum or SHA256 was there to catch
// them.
//
// Input: byte 0 picks the options, byte 1 the object's size, bytes 2-4
// HeadObject's answer, then 3 bytes per GET answer (see fuzzAnswer).
func FuzzHostileServer(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0, 0})
	f.Add([]byte{0x08, 5, 0, 0, 0, 1, 0, 0, 2, 1, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 5 || len(in) > 5+3*32 {
			return
		}
		fuzzLoad(t, in)
	})
}

const fuzzPart = 2 << 10

var fuzzSizes = [...]int{0, 1, fuzzPart - 1, fuzzPart, fuzzPart + 1, 3*fuzzPart + 7, 4 * fuzzPart, 5*fuzzPart - 3}

// fuzzSDKClient is the SDK's default kind of HTTP client, shared by every
// input as a program would share it; the loader tunes a copy of it.
var fuzzSDKClient = awshttp.NewBuildableClient()

func fuzzLoad(t *testing.T, in []byte) {
	cfg, sizeSel, headOp := in[0], in[1], in[2:5]
	answers := in[5:]
	concurrency := 1 + int(cfg>>5)%3
	useSHA, require, noChecksum, ownClient := cfg&1 != 0, cfg&2 != 0, cfg&4 != 0, cfg&8 != 0
	restart := cfg&16 != 0
	data := testutil.RandomBytes(fuzzSizes[int(sizeSel)%len(fuzzSizes)], uint64(sizeSel))
	other := testutil.RandomBytes(len(data)+int(sizeSel>>4), 99)

	leaks := goleak.IgnoreCurrent()
	fds := testutil.OpenFDs(t)

	var mu sync.Mutex
	seen := map[string]int{}
	var srv *testutil.HostileS3
	srv = testutil.NewHostileS3(t, func(r *http.Request) testutil.Answer {
		if r.URL.Path != "/bkt/model" {
			return testutil.Answer{}
		}
		if r.Method == http.MethodHead {
			return fuzzHead(headOp)
		}
		if len(answers) < 3 {
			return testutil.Answer{}
		}
		var start, end int64
		fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &start, &end)
		mu.Lock()
		key := r.Header.Get("Range")
		n := seen[key]
		seen[key]++
		mu.Unlock()
		i := (int(start/fuzzPart)*3 + n) % (len(answers) / 3)
		return fuzzAnswer(answers[3*i:3*i+3], start, end, int64(len(data)), srv.URL)
	})
	srv.Put("bkt", "model", data)
	srv.Put("bkt", "other", other)

	var hc s3.HTTPClient = fuzzSDKClient
	closeIdle := func() { tuneHTTPClient(fuzzSDKClient, concurrency).(*http.Client).CloseIdleConnections() }
	if ownClient {
		own := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		hc, closeIdle = own, own.CloseIdleConnections
	}
	client := s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("fuzz", "fuzz", ""),
		UsePathStyle: true,
		HTTPClient:   hc,
		Retryer: retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 2
			so.MaxBackoff = time.Millisecond
			so.RateLimiter = ratelimit.None
		}),
	})
	sum := sha256.Sum256(data)
	l := New(client, func(o *Options) {
		o.PartSize = fuzzPart
		o.Concurrency = concurrency
		o.MaxAttempts = 3
		o.RetryBackoff = time.Millisecond
		o.StallTimeout = 100 * time.Millisecond
		o.NoChecksum = noChecksum
		o.RequireChecksum = require
		o.RestartOnChange = restart
		if useSHA {
			o.SHA256 = hex.EncodeToString(sum[:])
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, stats, err := l.Load(ctx, "s3://bkt/model")

	t.Logf("%d bytes, %d at once, SHA256 %v, RequireChecksum %v, NoChecksum %v, own client %v: %v; verified %q, unverified %q",
		len(data), concurrency, useSHA, require, noChecksum, ownClient, err, stats.Verified, stats.Unverified)
	if err != nil {
		if !matchesSentinel(err) && ctx.Err() == nil {
			t.Errorf("error matches no sentinel: %v", err)
		}
	} else {
		m, merr := f.Map()
		if merr != nil {
			t.Fatal(merr)
		}
		exact := bytes.Equal(m, data)
		switch {
		case !exact && (useSHA || stats.Verified != ""):
			t.Errorf("wrong bytes (%d, want %d) returned as success though verified %q", len(m), len(data), stats.Verified)
		case require && stats.Verified == "":
			t.Errorf("RequireChecksum is set, but the load succeeded unverified: %q", stats.Unverified)
		case stats.Verified == "" && stats.Unverified == "":
			t.Errorf("unverified load does not say why")
		case f.Size() != stats.Size:
			t.Errorf("file has %d bytes, Stats.Size %d", f.Size(), stats.Size)
		}
		f.Close()
	}
	srv.Close()
	closeIdle()
	testutil.CheckFDs(t, fds, closeIdle)
	goleak.VerifyNone(t, leaks)
}

func matchesSentinel(err error) bool {
	for _, s := range []error{ErrInvalidInput, ErrNotFound, ErrAccessDenied, ErrRedirect, ErrObjectChanged, ErrChecksum,
		ErrNotVerified, ErrBadResponse, ErrStalled, ErrUnavailable, ErrDestination} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

var fuzzStatuses = [...]int{200, 206, 301, 304, 307, 400, 403, 404, 412, 416, 500, 503, 302, 204}

// fuzzAnswer turns 3 bytes into an answer to a GET of bytes start..end of
// an object of size bytes.
func fuzzAnswer(b []byte, start, end, size int64, url string) testutil.Answer {
	op, x, y := b[0], b[1], b[2]
	end = min(end, size-1)
	switch op % 12 {
	case 1:
		return testutil.Answer{Status: fuzzStatuses[int(x)%len(fuzzStatuses)]}
	case 2:
		cr := [...]string{
			"",
			fmt.Sprintf("bytes %d-%d/%d", start+1, end+1, size),
			fmt.Sprintf("bytes %d-%d/%d", start, end, size+int64(y)-128),
			fmt.Sprintf("bytes %d-%d/%d", start, end, int64(1)<<62+int64(y)),
			fmt.Sprintf("bytes %d-%d/9223372036854775807", start, end),
			"bytes x-y/z",
			fmt.Sprintf("bytes */%d", size),
			fmt.Sprintf("bytes %d-%d/%d", start, end-int64(y%4), size),
		}[int(x)%8]
		return testutil.Answer{Header: map[string]string{"Content-Range": cr}}
	case 3:
		cl := ""
		if x%2 == 1 {
			cl = strconv.FormatInt(end-start+1+int64(y%5)-2, 10)
		}
		return testutil.Answer{Header: map[string]string{"Content-Length": cl}}
	case 4:
		etag := ""
		if x%2 == 1 {
			etag = `"0123456789abcdef0123456789abcdef"`
		}
		return testutil.Answer{Header: map[string]string{"ETag": etag}}
	case 5:
		return testutil.Answer{Shift: int64(y) - 128}
	case 6:
		return testutil.Answer{BodyLen: int64(y) + 1 + int64(x%8)*256}
	case 7:
		return testutil.Answer{BodyLen: int64(y) + 1, Hang: true}
	case 8:
		return testutil.Answer{Delay: time.Duration(x%4) * 50 * time.Millisecond}
	case 9:
		return testutil.Answer{Trickle: 20 * time.Millisecond, TrickleBytes: int(y%64) + 1}
	case 10:
		return testutil.Answer{Status: http.StatusTemporaryRedirect, Header: map[string]string{"Location": url + "/bkt/other"}}
	case 11:
		return testutil.Answer{Status: fuzzStatuses[int(x)%2], Shift: int64(y) - 128,
			Header: map[string]string{"Content-Range": [...]string{"", fmt.Sprintf("bytes %d-%d/%d", start, end, size)}[y%2]}}
	}
	return testutil.Answer{}
}

// fuzzHead turns 3 bytes into HeadObject's answer.
func fuzzHead(b []byte) testutil.Answer {
	op, x, y := b[0], b[1], b[2]
	switch op % 9 {
	case 1:
		return testutil.Answer{Status: fuzzStatuses[int(x)%len(fuzzStatuses)]}
	case 2:
		cl := ""
		if x%2 == 1 {
			cl = strconv.Itoa(int(y) * 64)
		}
		return testutil.Answer{Header: map[string]string{"Content-Length": cl}}
	case 3:
		etag := ""
		if x%2 == 1 {
			etag = `"0123456789abcdef0123456789abcdef"`
		}
		return testutil.Answer{Header: map[string]string{"ETag": etag}}
	case 4:
		crc := [...]string{"", "AAAAAAAAAAA=", "not base64", "AAAAAAAAAAAAAAAA", "AAAAAA==-3"}[int(x)%5]
		return testutil.Answer{Header: map[string]string{"X-Amz-Checksum-Crc64nvme": crc}}
	case 5:
		return testutil.Answer{Header: map[string]string{"X-Amz-Checksum-Type": [...]string{"COMPOSITE", "", "bogus"}[int(x)%3]}}
	case 6:
		return testutil.Answer{Delay: time.Duration(x%4) * 50 * time.Millisecond}
	case 7:
		return testutil.Answer{Header: map[string]string{"X-Amz-Checksum-Crc64nvme": "", "X-Amz-Checksum-Crc32c": [...]string{"AAAAAA==", "bad", "AAAA"}[int(x)%3]}}
	case 8:
		return testutil.Answer{Header: map[string]string{"X-Amz-Version-Id": "v" + strconv.Itoa(int(x))}}
	}
	return testutil.Answer{}
}
