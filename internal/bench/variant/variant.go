// Package variant runs the downloads the benchmarks compare, each into a
// memfd: memload at its defaults or at a given shape, and the AWS SDK's
// manager.Downloader and transfermanager, as their users would run them.
//
// Names: memload (defaults), memload:seed (100 MiB parts, NumCPU workers),
// memload:P:C (P MiB parts, C workers), memload:noreserve, manager (SDK
// feature/s3/manager defaults), manager:P:C, transfermanager (defaults).
// The peers write into a memfd made with memfd_create and ftruncate, or,
// with +memfd after their name (manager+memfd), into memload's.
package variant

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

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

// Target is the object a variant downloads, and how to reach its server.
type Target struct {
	Endpoint, CertFile   string
	AccessKey, SecretKey string
	Bucket, Key          string
	Size                 int64
}

// NewClient makes the S3 client every variant shares: the SDK's defaults,
// trusting the server's certificate when there is one.
func NewClient(t Target) (*s3.Client, error) {
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

// Loaded is an object a variant put in a memfd.
type Loaded struct {
	File  *memfd.File  // memload's, and the peers' with +memfd
	Plain *os.File     // the peers' own memfd otherwise
	Stats s3load.Stats // memload's only
}

// ReaderAt returns the memfd, whichever kind it is.
func (l Loaded) ReaderAt() io.ReaderAt {
	if l.File != nil {
		return l.File
	}
	return l.Plain
}

// Close closes the memfd.
func (l Loaded) Close() error {
	if l.File != nil {
		return l.File.Close()
	}
	if l.Plain != nil {
		return l.Plain.Close()
	}
	return nil
}

// Download loads t with the named variant. opts apply to memload's
// variants after the variant's own settings; wrap, if set, wraps the
// peers' destination (to watch their writes).
func Download(ctx context.Context, client *s3.Client, variant string, t Target, wrap func(io.WriterAt) io.WriterAt, opts ...func(*s3load.Options)) (Loaded, error) {
	name, params, _ := strings.Cut(variant, ":")
	name, ourMemfd := strings.CutSuffix(name, "+memfd")
	if ourMemfd && name != "manager" && name != "transfermanager" {
		return Loaded{}, fmt.Errorf("unknown variant %q: only the peers (manager, transfermanager) take +memfd", variant)
	}
	if wrap == nil {
		wrap = func(w io.WriterAt) io.WriterAt { return w }
	}
	var l Loaded
	var err error
	switch name {
	case "memload":
		var shape func(*s3load.Options)
		switch params {
		case "":
			shape = func(*s3load.Options) {}
		case "seed":
			shape = func(o *s3load.Options) { o.PartSize, o.Concurrency = 100<<20, runtime.NumCPU() }
		case "noreserve":
			shape = func(o *s3load.Options) {
				o.MemfdOptions = append(o.MemfdOptions, func(m *memfd.Options) { m.NoReserve = true })
			}
		default:
			p, c, err := ParseShape(params)
			if err != nil {
				return l, err
			}
			shape = func(o *s3load.Options) { o.PartSize, o.Concurrency = p, c }
		}
		l.File, l.Stats, err = s3load.New(client, append([]func(*s3load.Options){shape}, opts...)...).Load(ctx, "s3://"+t.Bucket+"/"+t.Key)
		return l, err
	case "manager", "transfermanager":
		if l, err = newPeerMemfd(ctx, client, t, ourMemfd); err != nil {
			return l, err
		}
		dst := wrap(writerAt(l))
		if name == "manager" {
			d := manager.NewDownloader(client, func(d *manager.Downloader) {
				if params != "" {
					d.PartSize, d.Concurrency, err = ParseShape(params)
				}
			})
			if err == nil {
				_, err = d.Download(ctx, dst, &s3.GetObjectInput{Bucket: &t.Bucket, Key: &t.Key})
			}
		} else {
			_, err = transfermanager.New(client).DownloadObject(ctx, &transfermanager.DownloadObjectInput{Bucket: &t.Bucket, Key: &t.Key, WriterAt: dst})
		}
		if err != nil {
			l.Close()
			return Loaded{}, err
		}
		return l, nil
	}
	return l, fmt.Errorf("unknown variant %q", variant)
}

func writerAt(l Loaded) io.WriterAt {
	if l.File != nil {
		return l.File
	}
	return l.Plain
}

// newPeerMemfd makes the memfd a peer writes to, sized with HeadObject.
// By default it is made as a user of the SDK would without memload:
// memfd_create and ftruncate, as in AWS's write-up. With ourMemfd it is
// memload's memfd.File instead: reserved, its WriteAt calls taking turns.
func newPeerMemfd(ctx context.Context, client *s3.Client, t Target, ourMemfd bool) (Loaded, error) {
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &t.Bucket, Key: &t.Key})
	if err != nil {
		return Loaded{}, err
	}
	if ourMemfd {
		f, err := memfd.New(t.Key, aws.ToInt64(head.ContentLength))
		return Loaded{File: f}, err
	}
	fd, err := unix.MemfdCreate(t.Key, unix.MFD_CLOEXEC)
	if err != nil {
		return Loaded{}, err
	}
	f := os.NewFile(uintptr(fd), "memfd:"+t.Key)
	if err := f.Truncate(aws.ToInt64(head.ContentLength)); err != nil {
		f.Close()
		return Loaded{}, err
	}
	return Loaded{Plain: f}, nil
}

// ParseShape parses "PARTMiB:CONCURRENCY", such as "16:16".
func ParseShape(s string) (partSize int64, concurrency int, err error) {
	p, c, _ := strings.Cut(s, ":")
	mib, err1 := strconv.Atoi(p)
	concurrency, err2 := strconv.Atoi(c)
	if err1 != nil || err2 != nil || mib <= 0 || concurrency <= 0 {
		return 0, 0, fmt.Errorf("shape %q: want PARTMiB:CONCURRENCY, such as 16:16", s)
	}
	return int64(mib) << 20, concurrency, nil
}

// Label is a variant's name for a table.
func Label(v string) string {
	if strings.Contains(v, "+memfd") {
		return Label(strings.Replace(v, "+memfd", "", 1)) + ", into memload's memfd"
	}
	switch v {
	case "memload":
		return "memload (defaults)"
	case "memload:seed":
		return "memload, seed settings (100 MiB × NumCPU)"
	case "memload:noreserve":
		return "memload, memfd not reserved (MemfdOptions NoReserve)"
	case "manager":
		return "SDK manager.Downloader (defaults: 5 MiB × 5)"
	case "transfermanager":
		return "SDK transfermanager (defaults)"
	case "floor":
		return "floor: fill a memfd from memory with pwrite, no network"
	case "floor:noreserve":
		return "floor, memfd not reserved (no fallocate)"
	case "floor:map":
		return "floor, copy into a MAP_POPULATE mapping"
	case "net":
		return "net: memload's download into no memfd (bytes dropped)"
	}
	if name, shape, ok := strings.Cut(v, ":"); ok {
		p, c, _ := strings.Cut(shape, ":")
		if name == "manager" {
			name = "SDK manager.Downloader"
		}
		return fmt.Sprintf("%s, %s MiB × %s", name, p, c)
	}
	return v
}

// Median is the median of f over ss, 0 for none.
func Median[S any](ss []S, f func(S) float64) float64 {
	if len(ss) == 0 {
		return 0
	}
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
