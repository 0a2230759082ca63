package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/memload/memload/memfd"
	"github.com/memload/memload/s3load"
)

// target is what a child process downloads, and how it reaches the server.
type target struct {
	Endpoint, CertFile   string
	AccessKey, SecretKey string
	Bucket, Key          string
	Size                 int64
	Verify               bool   // print the SHA-256 of what was loaded
	SHA256               string // coldstart: expect this SHA-256 (Options.SHA256)
	StartUnixNano        int64  // when the parent started this process
}

// result is what a child prints, as one JSON line.
type result struct {
	Load   time.Duration            // from before the S3 client was made to the object in a memfd
	HWM    int64                    // peak RSS in bytes (VmHWM: rusage's maxrss starts from the parent's RSS at fork)
	User   time.Duration            // CPU time of the whole process, from getrusage when the object is in place:
	Sys    time.Duration            // freeing the memfd afterwards is not the loader's work
	SHA256 string                   `json:",omitempty"`
	Phases map[string]time.Duration `json:",omitempty"` // cold start only, each from process start
}

// runChild downloads the target once with the named variant, into a memfd,
// and prints a result. Its CPU time and peak RSS are read by the parent.
func runChild(variant string, t target) error {
	phases := map[string]time.Duration{}
	began := time.Unix(0, t.StartUnixNano)
	mark := func(name string) { phases[name] = time.Since(began) }
	mark("main")
	ctx := context.Background()
	start := time.Now()
	client, err := newClient(t)
	if err != nil {
		return err
	}
	mark("client")
	var f *memfd.File     // memload's result, or a floor
	var plain destination // a peer's result
	name, params, _ := strings.Cut(variant, ":")
	name, ourMemfd := strings.CutSuffix(name, "+memfd")
	if ourMemfd && name != "manager" && name != "transfermanager" {
		return fmt.Errorf("unknown variant %q: only the peers (manager, transfermanager) take +memfd", variant)
	}
	switch name {
	case "none":
		// Process start-up only: the baseline for CPU and RSS.
	case "floor":
		// No network: what filling the memfd alone costs, the part of
		// every variant's CPU time that no downloader can avoid.
		// floor:noreserve skips fallocate; floor:map copies into a
		// MAP_POPULATE mapping instead of calling pwrite.
		f, err = memfd.New(t.Key, t.Size, func(o *memfd.Options) { o.NoReserve = params == "noreserve" })
		if err != nil {
			return err
		}
		if err := fill(f, t.Size, params == "map"); err != nil {
			return err
		}
	case "memload", "coldstart":
		var firstWrite time.Time
		opts := func(o *s3load.Options) {
			if name == "coldstart" {
				o.SHA256 = t.SHA256
				o.Progress = func(done, total int64) {
					if firstWrite.IsZero() {
						firstWrite = time.Now()
					}
				}
			}
			switch params {
			case "":
			case "seed":
				o.PartSize, o.Concurrency = 100<<20, runtime.NumCPU()
			case "noreserve":
				o.MemfdOptions = append(o.MemfdOptions, func(m *memfd.Options) { m.NoReserve = true })
			default:
				o.PartSize, o.Concurrency, err = parseShape(params)
			}
		}
		loader := s3load.New(client, opts)
		if err != nil {
			return err
		}
		var stats s3load.Stats
		f, stats, err = loader.Load(ctx, "s3://"+t.Bucket+"/"+t.Key)
		if err != nil {
			return err
		}
		if name == "coldstart" {
			phases["first response"] = phases["client"] + stats.FirstByte
			phases["first write"] = firstWrite.Sub(began)
			phases["last byte"] = phases["client"] + stats.Elapsed
			mark("sealed")
			if _, err := sha256Of(f); err != nil {
				return err
			}
			mark("sha256")
		}
	case "net":
		// memload's download with nowhere to put the bytes: what the
		// network path (sockets, TLS, HTTP, SDK) costs without the memfd.
		if _, err := s3load.New(client).LoadTo(ctx, "s3://"+t.Bucket+"/"+t.Key, discard{}); err != nil {
			return err
		}
	case "manager":
		plain, err = newPeerMemfd(ctx, client, t, ourMemfd)
		if err != nil {
			return err
		}
		d := manager.NewDownloader(client, func(d *manager.Downloader) {
			if params != "" {
				d.PartSize, d.Concurrency, err = parseShape(params)
			}
		})
		if err != nil {
			return err
		}
		if _, err := d.Download(ctx, plain, &s3.GetObjectInput{Bucket: &t.Bucket, Key: &t.Key}); err != nil {
			return err
		}
	case "transfermanager":
		plain, err = newPeerMemfd(ctx, client, t, ourMemfd)
		if err != nil {
			return err
		}
		tm := transfermanager.New(client)
		if _, err := tm.DownloadObject(ctx, &transfermanager.DownloadObjectInput{Bucket: &t.Bucket, Key: &t.Key, WriterAt: plain}); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown variant %q", variant)
	}
	r := result{Load: time.Since(start), HWM: peakRSS()}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return err
	}
	r.User, r.Sys = time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
	if name == "coldstart" {
		r.Phases = phases
	}
	var loaded io.ReaderAt
	if f != nil {
		loaded = f
		defer f.Close()
	} else if plain != nil {
		loaded = plain
		defer plain.Close()
	}
	if t.Verify && loaded != nil {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(loaded, 0, t.Size)); err != nil {
			return err
		}
		r.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// parseShape parses "PARTMiB:CONCURRENCY", such as "16:16".
func parseShape(s string) (partSize int64, concurrency int, err error) {
	p, c, _ := strings.Cut(s, ":")
	mib, err1 := strconv.Atoi(p)
	concurrency, err2 := strconv.Atoi(c)
	if err1 != nil || err2 != nil || mib <= 0 || concurrency <= 0 {
		return 0, 0, fmt.Errorf("shape %q: want PARTMiB:CONCURRENCY, such as 16:16", s)
	}
	return int64(mib) << 20, concurrency, nil
}

// newClient makes the S3 client every variant shares: the SDK's defaults,
// trusting the server's certificate when there is one.
func newClient(t target) (*s3.Client, error) {
	httpClient := awshttp.NewBuildableClient()
	if t.CertFile != "" {
		pem, err := os.ReadFile(t.CertFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", t.CertFile)
		}
		httpClient = httpClient.WithTransportOptions(func(tr *http.Transport) {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{}
			}
			tr.TLSClientConfig.RootCAs = pool
		})
	}
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(t.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(t.AccessKey, t.SecretKey, ""),
		UsePathStyle: true,
		HTTPClient:   httpClient,
	}), nil
}

// destination is where a peer writes the object.
type destination interface {
	io.WriterAt
	io.ReaderAt
	io.Closer
}

// newPeerMemfd makes the memfd a peer writes to, sized with HeadObject.
// By default it is made as a user of the SDK would without memload:
// memfd_create and ftruncate, as in AWS's write-up. With ourMemfd (the
// variants named peer+memfd) it is memload's memfd.File instead: reserved,
// its WriteAt calls taking turns.
func newPeerMemfd(ctx context.Context, client *s3.Client, t target, ourMemfd bool) (destination, error) {
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &t.Bucket, Key: &t.Key})
	if err != nil {
		return nil, err
	}
	if ourMemfd {
		return memfd.New(t.Key, aws.ToInt64(head.ContentLength))
	}
	fd, err := unix.MemfdCreate(t.Key, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "memfd:"+t.Key)
	if err := f.Truncate(aws.ToInt64(head.ContentLength)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// discard is an io.WriterAt that keeps nothing.
type discard struct{}

func (discard) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

func sha256Of(f *memfd.File) (string, error) {
	b, err := f.Map()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// peakRSS reads VmHWM from /proc/self/status.
func peakRSS() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// fill writes size bytes into f, 1 MiB at a time, with pwrite or through a
// shared writable mapping.
func fill(f *memfd.File, size int64, mapped bool) error {
	buf := make([]byte, 1<<20)
	if !mapped {
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
				return err
			}
		}
		return nil
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return err
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		copy(m[off:], buf[:min(int64(len(buf)), size-off)])
	}
	return unix.Munmap(m)
}
