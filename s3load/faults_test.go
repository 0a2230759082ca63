package s3load_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"go.uber.org/goleak"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/memfd"
	"github.com/memload/memload/s3load"
)

const faultPart = 256 << 10

// faultClient is an S3 client that goes through proxy, with the SDK's
// retryer made quick and unthrottled so tests do not wait on it.
func faultClient(proxy *testutil.FaultProxy, hc *http.Client) *s3.Client {
	return server.Client(func(o *s3.Options) {
		o.BaseEndpoint = aws.String(proxy.URL)
		o.HTTPClient = hc
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxBackoff = 20 * time.Millisecond
			so.RateLimiter = ratelimit.None
		})
	})
}

func faultLoader(proxy *testutil.FaultProxy, hc *http.Client, optFns ...func(*s3load.Options)) *s3load.Loader {
	return s3load.New(faultClient(proxy, hc), append([]func(*s3load.Options){func(o *s3load.Options) {
		o.PartSize = faultPart
		o.Concurrency = 4
		o.RetryBackoff = 5 * time.Millisecond
		o.StallTimeout = 300 * time.Millisecond
	}}, optFns...)...)
}

// nth injects inj into the n-th ranged GET (counting from 1) and no other.
func nth(n int64, inj testutil.Injection) func(*http.Request) testutil.Injection {
	var seen atomic.Int64
	return func(r *http.Request) testutil.Injection {
		if r.Method == http.MethodGet && r.Header.Get("Range") != "" && seen.Add(1) == n {
			return inj
		}
		return testutil.Injection{}
	}
}

func mapSHA256(t *testing.T, f *memfd.File) string {
	t.Helper()
	m, err := f.Map()
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(m)
	return hex.EncodeToString(s[:])
}

func TestEachFaultAlone(t *testing.T) {
	const size = 6*faultPart + 1000
	uri, want := putObject(t, size)
	tests := []struct {
		name string
		inj  testutil.Injection
	}{
		{"reset mid-body", testutil.Injection{Fault: testutil.Reset, After: 100 << 10}},
		{"reset before body", testutil.Injection{Fault: testutil.Reset, After: 0}},
		{"500", testutil.Injection{Fault: testutil.Error500}},
		{"503 SlowDown", testutil.Injection{Fault: testutil.SlowDown}},
		{"stall mid-body", testutil.Injection{Fault: testutil.Stall, After: 70 << 10}},
		{"truncated body", testutil.Injection{Fault: testutil.Truncate, After: 200 << 10}},
		{"wrong Content-Range", testutil.Injection{Fault: testutil.WrongRange}},
	}
	for _, tt := range tests {
		for _, n := range []int64{1, 3} { // the first part (which sizes the file) and a later one
			t.Run(fmt.Sprintf("%s/part %d", tt.name, n), func(t *testing.T) {
				hc := awsHTTPClient()
				proxy := testutil.NewFaultProxy(t, server.Endpoint, nth(n, tt.inj))
				f, stats, err := faultLoader(proxy, hc).Load(context.Background(), uri)
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				defer f.Close()
				if got := mapSHA256(t, f); got != want {
					t.Fatalf("loaded bytes differ from the object after a %s", tt.name)
				}
				if c := proxy.Counts()[tt.inj.Fault]; c != 1 {
					t.Errorf("fault injected %d times, want 1", c)
				}
				// Request-level faults are retried by the SDK; body faults by s3load.
				if body := tt.inj.Fault != testutil.Error500 && tt.inj.Fault != testutil.SlowDown; body && stats.Retries == 0 {
					t.Errorf("stats.Retries = 0 after a %s", tt.name)
				}
			})
		}
	}
}

// Resumed retries must ask only for the bytes not yet written.
func TestRetryResumes(t *testing.T) {
	uri, want := putObject(t, 2*faultPart)
	var mu sync.Mutex
	var ranges []string
	var n atomic.Int64
	proxy := testutil.NewFaultProxy(t, server.Endpoint, func(r *http.Request) testutil.Injection {
		if r.Method != http.MethodGet || r.Header.Get("Range") == "" {
			return testutil.Injection{}
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		if n.Add(1) == 1 {
			return testutil.Injection{Fault: testutil.Reset, After: 100_000}
		}
		return testutil.Injection{}
	})
	f, _, err := faultLoader(proxy, awsHTTPClient(), func(o *s3load.Options) { o.Concurrency = 1 }).
		Load(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if mapSHA256(t, f) != want {
		t.Fatal("bytes differ")
	}
	// The proxy cuts after 100000 body bytes, but the client may not have
	// read them all: the resumed range starts at or before that.
	var resumed string
	for _, r := range ranges {
		if r != "bytes=0-262143" && r != "bytes=262144-524287" {
			resumed = r
		}
	}
	var from, to int64
	if _, err := fmt.Sscanf(resumed, "bytes=%d-%d", &from, &to); err != nil || from <= 0 || from > 100_000 || to != faultPart-1 {
		t.Errorf("requests %q: want one resuming part 0 from a byte in (0, 100000]", ranges)
	}
}

func TestMaxAttempts(t *testing.T) {
	uri, _ := putObject(t, faultPart)
	proxy := testutil.NewFaultProxy(t, server.Endpoint, func(r *http.Request) testutil.Injection {
		if r.Method == http.MethodGet {
			return testutil.Injection{Fault: testutil.Truncate, After: 1000}
		}
		return testutil.Injection{}
	})
	before := testutil.OpenFDs(t)
	hc := awsHTTPClient()
	f, _, err := faultLoader(proxy, hc, func(o *s3load.Options) { o.MaxAttempts = 3 }).Load(context.Background(), uri)
	if err == nil {
		f.Close()
		t.Fatal("Load succeeded though every body was truncated")
	}
	var e *s3load.Error
	if !errors.As(err, &e) || e.Attempt != 3 || e.Object.String() != uri {
		t.Fatalf("err = %v, want an *s3load.Error at attempt 3 for %s", err, uri)
	}
	for _, s := range []string{uri, "attempt 3", "early", "bytes"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	testutil.CheckFDs(t, before, hc.CloseIdleConnections)
}

// overwriteAt overwrites bucket/key with data just before the n-th ranged
// GET reaches the server.
func overwriteAt(t *testing.T, n int64, bucket, key string, data []byte) func(*http.Request) testutil.Injection {
	return nth(n, testutil.Injection{Before: func() {
		if err := server.Put(context.Background(), bucket, key, data); err != nil {
			t.Error(err)
		}
	}})
}

func TestObjectReplacedMidLoad(t *testing.T) {
	bucket := bucketFor(t)
	v1, v2 := testutil.RandomBytes(5*faultPart, 1), testutil.RandomBytes(5*faultPart+7, 2)
	put := func() {
		t.Helper()
		if err := server.Put(context.Background(), bucket, "model", v1); err != nil {
			t.Fatal(err)
		}
	}
	uri := "s3://" + bucket + "/model"

	t.Run("fails", func(t *testing.T) {
		put()
		proxy := testutil.NewFaultProxy(t, server.Endpoint, overwriteAt(t, 3, bucket, "model", v2))
		f, _, err := faultLoader(proxy, awsHTTPClient()).Load(context.Background(), uri)
		if err == nil {
			f.Close()
			t.Fatal("Load of an object replaced midway succeeded")
		}
		if !errors.Is(err, s3load.ErrObjectChanged) {
			t.Fatalf("err = %v, want ErrObjectChanged", err)
		}
	})
	t.Run("restarts", func(t *testing.T) {
		put()
		proxy := testutil.NewFaultProxy(t, server.Endpoint, overwriteAt(t, 3, bucket, "model", v2))
		f, stats, err := faultLoader(proxy, awsHTTPClient(), func(o *s3load.Options) { o.RestartOnChange = true }).
			Load(context.Background(), uri)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		m, _ := f.Map()
		if !bytes.Equal(m, v2) || !stats.Restarted {
			t.Errorf("after a restart: %d bytes, equal to the new version: %v, Restarted %v", len(m), bytes.Equal(m, v2), stats.Restarted)
		}
	})
}

func TestVersionedObjectStaysPinned(t *testing.T) {
	bucket := bucketFor(t)
	ctx := context.Background()
	_, err := server.Client().PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{
		Bucket:                  &bucket,
		VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled},
	})
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := testutil.RandomBytes(5*faultPart, 3), testutil.RandomBytes(5*faultPart, 4)
	if err := server.Put(ctx, bucket, "model", v1); err != nil {
		t.Fatal(err)
	}
	proxy := testutil.NewFaultProxy(t, server.Endpoint, overwriteAt(t, 3, bucket, "model", v2))
	f, _, err := faultLoader(proxy, awsHTTPClient()).Load(ctx, "s3://"+bucket+"/model")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if m, _ := f.Map(); !bytes.Equal(m, v1) {
		t.Error("a versioned load did not return the version it started with")
	}
}

func TestSHA256(t *testing.T) {
	uri, sum := putObject(t, 3*faultPart+3)
	l := s3load.New(client(), func(o *s3load.Options) { o.PartSize = faultPart })

	f, stats, err := l.Load(context.Background(), uri, func(o *s3load.Options) { o.SHA256 = strings.ToUpper(sum) })
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if stats.Verified != "SHA-256" {
		t.Errorf("Verified = %q, want SHA-256", stats.Verified)
	}

	// A destination without a mapping is read back part by part.
	out, err := os.Create(filepath.Join(t.TempDir(), "model"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if stats, err := l.LoadTo(context.Background(), uri, out, func(o *s3load.Options) { o.SHA256 = sum }); err != nil || stats.Verified != "SHA-256" {
		t.Errorf("LoadTo a file with SHA256: %v, Verified %q", err, stats.Verified)
	}

	wrong := strings.Repeat("0", 64)
	sharedHTTP.CloseIdleConnections()
	before := testutil.OpenFDs(t)
	f, _, err = l.Load(context.Background(), uri, func(o *s3load.Options) { o.SHA256 = wrong })
	if err == nil {
		f.Close()
		t.Fatal("Load with a wrong SHA256 succeeded")
	}
	if !errors.Is(err, s3load.ErrChecksum) || !strings.Contains(err.Error(), sum) || !strings.Contains(err.Error(), wrong) {
		t.Errorf("err = %v, want ErrChecksum naming both sums", err)
	}
	testutil.CheckFDs(t, before, sharedHTTP.CloseIdleConnections)

	for _, bad := range []string{"abc", strings.Repeat("g", 64)} {
		if _, _, err := l.Load(context.Background(), uri, func(o *s3load.Options) { o.SHA256 = bad }); err == nil || !strings.Contains(err.Error(), "64 hex digits") {
			t.Errorf("SHA256 %q: err = %v, want a format error", bad, err)
		}
	}
	if _, err := l.LoadTo(context.Background(), uri, onlyWriter{}, func(o *s3load.Options) { o.SHA256 = sum }); err == nil ||
		!strings.Contains(err.Error(), "io.ReaderAt") {
		t.Errorf("LoadTo a plain WriterAt with SHA256: err = %v", err)
	}
}

type onlyWriter struct{}

func (onlyWriter) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }

func TestS3Checksum(t *testing.T) {
	bucket := bucketFor(t)
	data := testutil.RandomBytes(5*faultPart+11, 9)
	for _, alg := range []s3types.ChecksumAlgorithm{s3types.ChecksumAlgorithmCrc64nvme, s3types.ChecksumAlgorithmCrc32c} {
		t.Run(string(alg), func(t *testing.T) {
			key := "crc-" + string(alg)
			_, err := server.Client().PutObject(context.Background(), &s3.PutObjectInput{
				Bucket: &bucket, Key: &key, Body: bytes.NewReader(data), ChecksumAlgorithm: alg,
			})
			if err != nil {
				t.Fatal(err)
			}
			uri := "s3://" + bucket + "/" + key

			proxy := testutil.NewFaultProxy(t, server.Endpoint, nth(2, testutil.Injection{Fault: testutil.Reset, After: 5000}))
			f, stats, err := faultLoader(proxy, awsHTTPClient()).Load(context.Background(), uri)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			if stats.Verified != string(alg) {
				t.Errorf("Verified = %q, want %s (with a resumed part)", stats.Verified, alg)
			}

			corrupt := testutil.NewFaultProxy(t, server.Endpoint, nth(3, testutil.Injection{Fault: testutil.Corrupt, After: 777}))
			f, _, err = faultLoader(corrupt, awsHTTPClient()).Load(context.Background(), uri)
			if err == nil {
				f.Close()
				t.Fatal("Load of a corrupted body succeeded")
			}
			if !errors.Is(err, s3load.ErrChecksum) {
				t.Errorf("err = %v, want ErrChecksum", err)
			}

			f, stats, err = faultLoader(corrupt, awsHTTPClient(), func(o *s3load.Options) { o.NoChecksum = true }).Load(context.Background(), uri)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			if stats.Verified != "" {
				t.Errorf("NoChecksum: Verified = %q", stats.Verified)
			}
		})
	}
}

// TestSoak runs many loads through random faults and counts the outcomes:
// each must be the exact bytes of one version of the object, or a clean
// error. Run with -v to see the counts.
func TestSoak(t *testing.T) {
	loads := 500
	if testing.Short() {
		loads = 50
	}
	const size = 2<<20 + 12345
	const seed = 20261129
	bucket := bucketFor(t)
	ctx := context.Background()
	versions := [][]byte{testutil.RandomBytes(size, 11), testutil.RandomBytes(size+faultPart, 12)}
	sums := map[string]int{}
	for i, v := range versions {
		s := sha256.Sum256(v)
		sums[hex.EncodeToString(s[:])] = i
	}
	if err := server.Put(ctx, bucket, "model", versions[0]); err != nil {
		t.Fatal(err)
	}

	server.CloseIdleConnections()
	fdsBefore := testutil.OpenFDs(t)
	hc := awsHTTPClient()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	random := testutil.RandomFaults(seed, 0.15)
	var overwrites atomic.Int64
	var reqs atomic.Int64
	proxy := testutil.NewFaultProxy(t, server.Endpoint, func(r *http.Request) testutil.Injection {
		inj := random(r)
		// Every 300th ranged GET, replace the object with the other version.
		if r.Method == http.MethodGet && r.Header.Get("Range") != "" && reqs.Add(1)%300 == 0 {
			v := overwrites.Add(1) % 2
			inj.Before = func() { server.Put(context.Background(), bucket, "model", versions[v]) }
		}
		return inj
	})

	var ok, cleanErr, wrong atomic.Int64
	errKinds := sync.Map{}
	deadline := time.Now().Add(5 * time.Minute)
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range jobs {
				l := faultLoader(proxy, hc, func(o *s3load.Options) { o.RestartOnChange = i%2 == 0 })
				f, _, err := l.Load(ctx, "s3://"+bucket+"/model")
				if err != nil {
					cleanErr.Add(1)
					var e *s3load.Error
					key := "other: " + err.Error()
					if errors.As(err, &e) {
						key = fmt.Sprintf("%s %v", e.Op, kindOf(err))
					}
					n, _ := errKinds.LoadOrStore(key, new(atomic.Int64))
					n.(*atomic.Int64).Add(1)
					continue
				}
				m, _ := f.Map()
				s := sha256.Sum256(m)
				if _, known := sums[hex.EncodeToString(s[:])]; known {
					ok.Add(1)
				} else {
					wrong.Add(1)
				}
				f.Close()
			}
		})
	}
	done := 0
	for ; done < loads && time.Now().Before(deadline); done++ {
		jobs <- done
	}
	close(jobs)
	wg.Wait()
	proxy.Close()
	hc.CloseIdleConnections()
	server.CloseIdleConnections()

	var faults []string
	for f, n := range proxy.Counts() {
		faults = append(faults, fmt.Sprintf("%v=%d", f, n))
	}
	t.Logf("soak (seed %d): %d loads: %d byte-exact, %d clean errors, %d wrong bytes; %d overwrites; requests by fault: %s",
		seed, done, ok.Load(), cleanErr.Load(), wrong.Load(), overwrites.Load(), strings.Join(faults, " "))
	errKinds.Range(func(k, v any) bool {
		t.Logf("  error %s: %d", k, v.(*atomic.Int64).Load())
		return true
	})
	if done < loads {
		t.Errorf("only %d of %d loads ran before the deadline", done, loads)
	}
	if wrong.Load() != 0 {
		t.Errorf("%d loads returned bytes that are no version of the object", wrong.Load())
	}
	if ok.Load() < int64(done)*9/10 {
		t.Errorf("only %d of %d loads succeeded: retries are not doing their job", ok.Load(), done)
	}
	testutil.CheckFDs(t, fdsBefore, hc.CloseIdleConnections, server.CloseIdleConnections)
}

func kindOf(err error) string {
	for _, k := range []error{s3load.ErrObjectChanged, s3load.ErrBadResponse, s3load.ErrChecksum, s3load.ErrNotFound, s3load.ErrAccessDenied} {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	return "retries exhausted"
}
