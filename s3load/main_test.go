package s3load_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/internal/testutil"
)

// server is the MinIO every test in this package talks to.
var server *testutil.MinIO

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// The fuzz targets need no MinIO; each fuzz worker would start one.
	flag.Parse()
	if fuzzing := flag.Lookup("test.fuzz"); fuzzing != nil && fuzzing.Value.String() != "" ||
		flag.Lookup("test.fuzzworker") != nil && flag.Lookup("test.fuzzworker").Value.String() == "true" {
		return m.Run()
	}
	ctx := context.Background()
	var err error
	server, err = testutil.StartMinIO(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer server.Stop()
	// The examples use the SDK's default configuration, which reads these.
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_S3":         server.Endpoint,
		"AWS_ACCESS_KEY_ID":           server.AccessKey,
		"AWS_SECRET_ACCESS_KEY":       server.SecretKey,
		"AWS_REGION":                  server.Region,
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	} {
		os.Setenv(k, v)
	}
	if err := server.CreateBucket(ctx, "models"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := server.Put(ctx, "models", "tiny.gguf", []byte("GGUF tiny model bytes")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// A 3 MiB file whose index is at its end, for ExampleOptions_order.
	if err := server.Put(ctx, "models", "archive.zip", testutil.RandomBytes(3<<20, 1)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// sharedHTTP carries every test's requests, so tests can close its idle
// connections before counting descriptors.
var sharedHTTP = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}

func client(optFns ...func(*s3.Options)) *s3.Client {
	return server.Client(append([]func(*s3.Options){func(o *s3.Options) { o.HTTPClient = sharedHTTP }}, optFns...)...)
}
