package testutil

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// minioTLS is the self-signed certificate a TLS MinIO serves.
type minioTLS struct {
	dir       string // MinIO's --certs-dir: public.crt and private.key
	pool      *x509.CertPool
	client    *http.Client // trusts the certificate
	sdkClient *awshttp.BuildableClient
}

// StartMinIOTLS is [StartMinIO] serving HTTPS on 127.0.0.1 with a new
// self-signed certificate, as real S3 speaks TLS. [MinIO.Client] and
// [MinIO.HTTPClient] trust the certificate; other processes can be given
// [MinIO.CertFile].
func StartMinIOTLS(ctx context.Context) (*MinIO, error) {
	return startMinIO(ctx, true)
}

// NewMinIOTLS starts a TLS MinIO server for one test and stops it when the
// test ends.
func NewMinIOTLS(tb testing.TB) *MinIO {
	tb.Helper()
	m, err := StartMinIOTLS(context.Background())
	if err != nil {
		tb.Fatalf("MinIO (TLS): %v", err)
	}
	tb.Cleanup(func() { m.Stop() })
	return m
}

// CertFile returns the PEM file of the server's self-signed certificate,
// or "" for a plain HTTP server. It is removed by [MinIO.Stop].
func (m *MinIO) CertFile() string {
	if m.tls == nil {
		return ""
	}
	return filepath.Join(m.tls.dir, "public.crt")
}

// HTTPClient returns an HTTP client for the server: one that trusts its
// certificate when it serves TLS, http.DefaultClient otherwise.
func (m *MinIO) HTTPClient() *http.Client {
	if m.tls == nil {
		return http.DefaultClient
	}
	return m.tls.client
}

// setupTLS writes a self-signed certificate for 127.0.0.1 into a certs
// directory under m.dir and switches the endpoint to https.
func (m *MinIO) setupTLS() error {
	dir := filepath.Join(m.dir, "certs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "public.crt"), certPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "private.key"), keyPEM, 0o600); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	m.tls = &minioTLS{
		dir:    dir,
		pool:   pool,
		client: &http.Client{Transport: tr},
		sdkClient: awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			t.TLSClientConfig.RootCAs = pool
		}),
	}
	m.Endpoint = "https://" + strings.TrimPrefix(m.Endpoint, "http://")
	return nil
}

// selfSigned makes an ECDSA P-256 certificate for 127.0.0.1, valid for a
// day, and its key, both PEM-encoded.
func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "memload test MinIO"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}
