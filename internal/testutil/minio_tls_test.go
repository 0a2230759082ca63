package testutil

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func TestMinIOTLS(t *testing.T) {
	m := NewMinIOTLS(t)
	if !strings.HasPrefix(m.Endpoint, "https://127.0.0.1:") {
		t.Fatalf("Endpoint = %s, want https://127.0.0.1:PORT", m.Endpoint)
	}
	ctx := context.Background()
	if err := m.CreateBucket(ctx, "bucket"); err != nil {
		t.Fatal(err)
	}
	want := []byte("over TLS")
	if err := m.Put(ctx, "bucket", "k", want); err != nil {
		t.Fatal(err)
	}
	out, err := m.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bucket"), Key: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("GetObject = %q, %v; want %q", got, err, want)
	}
	if m.CertFile() == "" {
		t.Fatal("CertFile is empty for a TLS server")
	}
	// A client that does not trust the certificate must be refused.
	if resp, err := http.Get(m.Endpoint + "/minio/health/ready"); err == nil {
		resp.Body.Close()
		t.Fatal("a client without the certificate connected: the server is not using it")
	}
}
