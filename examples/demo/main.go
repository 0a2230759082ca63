// Command demo shows memload end to end on this machine: it starts a local
// MinIO, uploads a generated object, and runs the memload command against
// it, so the whole path S3 → memfd can be seen without an AWS account.
//
//	go run ./examples/demo -memload .bin/memload
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"

	"github.com/memload/memload/internal/testutil"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	memload := flag.String("memload", ".bin/memload", "the memload command to run")
	size := flag.Int64("size", 256<<20, "bytes in the generated object")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	fmt.Println("starting MinIO on 127.0.0.1 ...")
	m, err := testutil.StartMinIO(ctx)
	if err != nil {
		return err
	}
	defer m.Stop()
	if err := m.CreateBucket(ctx, "models"); err != nil {
		return err
	}
	fmt.Printf("uploading a %d MiB generated object ...\n", *size>>20)
	sum, err := m.PutRandom(ctx, "models", "demo/model.bin", *size, 1)
	if err != nil {
		return err
	}
	fmt.Printf("uploaded s3://models/demo/model.bin, sha256 %s\n\n$ memload -sha256 s3://models/demo/model.bin\n", sum)

	cmd := exec.CommandContext(ctx, *memload, "-sha256", "s3://models/demo/model.bin")
	cmd.Env = append(os.Environ(),
		"AWS_ENDPOINT_URL_S3="+m.Endpoint,
		"AWS_ACCESS_KEY_ID="+m.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+m.SecretKey,
		"AWS_REGION="+m.Region,
		"AWS_EC2_METADATA_DISABLED=true",
	)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}
