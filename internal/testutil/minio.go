// Package testutil runs the real parts tests need: a MinIO server on
// 127.0.0.1, generated objects and models, and fault injection.
package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// MinIOModule is the MinIO version the project tests against. MinIO is
// AGPL: it only ever runs as a separate process, it is never imported.
const MinIOModule = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"

// MinIOInstall is the command that puts MinIO where [MinIOBinary] looks.
const MinIOInstall = "make minio   # or: GOBIN=$PWD/.bin go install " + MinIOModule

// MinIO is a MinIO server process listening on 127.0.0.1.
type MinIO struct {
	Endpoint  string // base URL, http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string

	cmd  *exec.Cmd
	dir  string
	tls  *minioTLS // nil for plain HTTP; see StartMinIOTLS
	logs *bytes.Buffer
	done chan error

	adminOnce   sync.Once
	adminHTTP   *http.Client
	adminClient *s3.Client
}

// MinIOBinary finds the minio executable: $MEMLOAD_MINIO, then .bin/minio
// in the repository, then $PATH. The error says how to install it.
func MinIOBinary() (string, error) {
	if p := os.Getenv("MEMLOAD_MINIO"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("MEMLOAD_MINIO=%s: %w", p, err)
		}
		return p, nil
	}
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, ".bin", "minio")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("minio not found in $MEMLOAD_MINIO, .bin/ or $PATH; install it with: %s", MinIOInstall)
}

// RepoRoot returns the directory of this module's go.mod, searching up from
// the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/memload/memload\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the memload repository")
		}
		dir = parent
	}
}

// StartMinIO starts a MinIO server on a free port of 127.0.0.1 with its
// data in a new temporary directory, and waits until it is ready. Stop it
// with [MinIO.Stop]; it is also killed if this process dies.
func StartMinIO(ctx context.Context) (*MinIO, error) {
	return startMinIO(ctx, false)
}

func startMinIO(ctx context.Context, useTLS bool) (*MinIO, error) {
	bin, err := MinIOBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "memload-minio-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	m := &MinIO{
		Endpoint:  fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		AccessKey: "memload",
		SecretKey: "memload-secret-" + rand.Text()[:8],
		Region:    "us-east-1",
		dir:       dir,
		logs:      new(bytes.Buffer),
		done:      make(chan error, 1),
	}
	args := []string{"server", "--quiet",
		"--address", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--console-address", fmt.Sprintf("127.0.0.1:%d", ports[1])}
	if useTLS {
		if err := m.setupTLS(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		args = append(args, "--certs-dir", m.tls.dir)
	}
	m.cmd = exec.Command(bin, append(args, filepath.Join(dir, "data"))...)
	m.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	m.cmd.Stdout, m.cmd.Stderr = m.logs, m.logs
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { m.done <- m.cmd.Wait() }()
	if err := m.waitReady(ctx); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

// NewMinIO starts a MinIO server for one test and stops it when the test
// ends. A missing binary fails the test with the command that installs it.
func NewMinIO(tb testing.TB) *MinIO {
	tb.Helper()
	m, err := StartMinIO(context.Background())
	if err != nil {
		tb.Fatalf("MinIO: %v", err)
	}
	tb.Cleanup(func() { m.Stop() })
	return m
}

func (m *MinIO) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		// /minio/health/ready can say 200 while S3 calls still get 503
		// XMinioServerNotInitialized, so wait for an S3 call to succeed too.
		req, _ := http.NewRequestWithContext(ctx, "GET", m.Endpoint+"/minio/health/ready", nil)
		if resp, err := m.HTTPClient().Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if _, err := m.admin().ListBuckets(ctx, &s3.ListBucketsInput{}); err == nil {
					return nil
				}
			}
		}
		select {
		case err := <-m.done:
			m.done <- err
			return fmt.Errorf("minio exited before it was ready (%v): %s", err, m.logs)
		case <-ctx.Done():
			return fmt.Errorf("minio not ready at %s: %w: %s", m.Endpoint, ctx.Err(), m.logs)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Pid returns the server's process ID (for benchmarks that count its CPU
// time).
func (m *MinIO) Pid() int { return m.cmd.Process.Pid }

// Stop kills the server and removes its data.
func (m *MinIO) Stop() error {
	if m.cmd.Process != nil {
		syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		err := <-m.done
		m.done <- err
	}
	return os.RemoveAll(m.dir)
}

// Client returns an S3 client for the server, with path-style addressing
// as MinIO needs.
func (m *MinIO) Client(optFns ...func(*s3.Options)) *s3.Client {
	o := s3.Options{
		Region:       m.Region,
		BaseEndpoint: aws.String(m.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
		UsePathStyle: true,
	}
	if m.tls != nil {
		o.HTTPClient = m.tls.sdkClient
	}
	return s3.New(o, optFns...)
}

// admin returns the client that CreateBucket, Put and PutRandom share, so
// that they reuse connections instead of leaving one idle per call.
func (m *MinIO) admin() *s3.Client {
	m.adminOnce.Do(func() {
		m.adminHTTP = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		if m.tls != nil {
			m.adminHTTP = m.tls.client
		}
		m.adminClient = m.Client(func(o *s3.Options) { o.HTTPClient = m.adminHTTP })
	})
	return m.adminClient
}

// CloseIdleConnections closes the idle connections of the client behind
// CreateBucket, Put and PutRandom, for tests that count descriptors.
func (m *MinIO) CloseIdleConnections() {
	m.admin()
	m.adminHTTP.CloseIdleConnections()
}

// CreateBucket creates a bucket.
func (m *MinIO) CreateBucket(ctx context.Context, bucket string) error {
	_, err := m.admin().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	return nil
}

// Put uploads data as bucket/key.
func (m *MinIO) Put(ctx context.Context, bucket, key string, data []byte) error {
	_, err := m.admin().PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data),
	})
	if err != nil {
		return fmt.Errorf("put s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}

// PutRandom uploads size pseudo-random bytes made from seed as bucket/key,
// in parts so that large objects never sit in memory whole, and returns
// their SHA-256 in hex. The same seed and size always give the same bytes.
func (m *MinIO) PutRandom(ctx context.Context, bucket, key string, size int64, seed uint64) (string, error) {
	const partSize = 64 << 20
	if size <= partSize {
		data := RandomBytes(int(size), seed)
		sum := sha256.Sum256(data)
		return hex.EncodeToString(sum[:]), m.Put(ctx, bucket, key, data)
	}
	c := m.admin()
	up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return "", fmt.Errorf("put s3://%s/%s: %w", bucket, key, err)
	}
	h := sha256.New()
	src := io.LimitReader(NewRandomReader(seed), size)
	buf := make([]byte, partSize)
	var parts []s3types.CompletedPart
	for n := int32(1); ; n++ {
		k, err := io.ReadFull(src, buf)
		if k == 0 {
			break
		}
		h.Write(buf[:k])
		out, perr := c.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: &bucket, Key: &key, UploadId: up.UploadId, PartNumber: aws.Int32(n),
			Body: bytes.NewReader(buf[:k]),
		})
		if perr != nil {
			return "", fmt.Errorf("put s3://%s/%s part %d: %w", bucket, key, n, perr)
		}
		parts = append(parts, s3types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
		if err != nil {
			break
		}
	}
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &bucket, Key: &key, UploadId: up.UploadId,
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return "", fmt.Errorf("complete s3://%s/%s: %w", bucket, key, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// NewRandomReader returns an endless reader of pseudo-random bytes made from
// seed (ChaCha8: fast, and the same for the same seed).
func NewRandomReader(seed uint64) io.Reader {
	var key [32]byte
	for i := range 4 {
		for j := range 8 {
			key[i*8+j] = byte(seed >> (8 * j))
		}
	}
	return mrand.NewChaCha8(key)
}

// RandomBytes returns n bytes of [NewRandomReader](seed).
func RandomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	io.ReadFull(NewRandomReader(seed), b)
	return b
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
