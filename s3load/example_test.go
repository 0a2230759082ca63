package s3load_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/s3load"
)

// The tests point the SDK's default configuration at a local MinIO
// (AWS_ENDPOINT_URL_S3 and credentials in the environment).
func Example() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })

	f, stats, err := s3load.New(client).Load(ctx, "s3://models/tiny.gguf")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	// Hand f.Path() to anything that opens files, llama.cpp for one.
	b, err := os.ReadFile(f.Path())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d bytes in %d part: %s\n", stats.Size, stats.Parts, b)
	// Output: 21 bytes in 1 part: GGUF tiny model bytes
}

func ExampleLoader_LoadTo() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })

	out, err := os.CreateTemp("", "model-*.gguf")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(out.Name())
	defer out.Close()

	loader := s3load.New(client, func(o *s3load.Options) { o.Concurrency = 8 })
	stats, err := loader.LoadTo(ctx, "s3://models/tiny.gguf", out)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(stats.Size, "bytes written to a file")
	// Output: 21 bytes written to a file
}

// A load can be made to refuse bytes it could not verify; its errors are
// told apart with the sentinels.
func ExampleOptions_requireChecksum() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })

	loader := s3load.New(client, func(o *s3load.Options) {
		o.RequireChecksum = true
		// Published with the model, from sha256sum.
		o.SHA256 = "d8ba731a3d39b696539e0f9f8611e95324fb890499f8b45b0dc2249fb23f75a7"
	})
	f, stats, err := loader.Load(ctx, "s3://models/tiny.gguf")
	switch {
	case errors.Is(err, s3load.ErrChecksum), errors.Is(err, s3load.ErrNotVerified):
		log.Fatal("refusing the model: ", err)
	case errors.Is(err, s3load.ErrStalled), errors.Is(err, s3load.ErrUnavailable):
		log.Fatal("S3 is slow or failing; try again later: ", err)
	case err != nil:
		log.Fatal(err)
	}
	defer f.Close()
	fmt.Println("verified:", stats.Verified)
	// Output: verified: SHA-256
}

// A consumer that reads an object as it downloads can ask for the bytes it
// needs first once it has read the head: here a file whose index sits in
// its last kilobyte (a ZIP's central directory, say). memload.Load asks
// for a model's tensors in the order llama.cpp loads them this way.
func ExampleOptions_order() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })

	f, stats, err := s3load.New(client).Load(ctx, "s3://models/archive.zip", func(o *s3load.Options) {
		o.PartSize, o.Concurrency = 1<<20, 1
		o.Order = func(head io.ReaderAt, n, size int64) [][2]int64 {
			// head holds bytes [0, n); return nil to be asked again
			// when more of them are in.
			return [][2]int64{{size - 1024, size}}
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	fmt.Printf("%d bytes in %d parts\n", stats.Size, stats.Parts) // the last part second (TestOrder checks it)
	// Output: 3145728 bytes in 3 parts
}

// A consumer that changes the bytes it is given, such as one that gives
// back the memory of bytes it has used (memfd.File.PunchHole), must wait
// until the load is done with them: with SHA256, the load reads every byte
// back to hash it. OnRelease tells it when; OnPart tells of each part as
// it lands, wherever it lies. memload.Load wires llm.EarlyLoad to both.
func ExampleOptions_onRelease() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })

	var landed, released atomic.Int64
	f, stats, err := s3load.New(client).Load(ctx, "s3://models/archive.zip", func(o *s3load.Options) {
		o.PartSize = 1 << 20
		o.NoSeal = true // a consumer that changes the file
		o.OnPart = func(_ io.WriterAt, start, end int64) { landed.Add(end - start) }
		o.OnRelease = func(w io.WriterAt, n int64) {
			// Bytes [0, n) are in place and will not be read again
			// (with SHA256 set: once hashed).
			released.Store(n)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	fmt.Println(stats.Size, landed.Load(), released.Load())
	// Output: 3145728 3145728 3145728
}
