package memload_test

import (
	"context"
	"fmt"
	"log"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload"
	"github.com/memload/memload/llm"
)

// The tests point the SDK's default configuration at a local MinIO
// (AWS_ENDPOINT_URL_S3 and credentials in the environment), which holds a
// tiny generated model; on Lambda the same code reads from S3.
func ExampleLoad() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })

	model, stats, err := memload.Load(ctx, client, "s3://models/tiny.gguf", func(o *memload.Options) {
		// o.SHA256 = "…" // the model's, checked as the parts land
		o.LLMOptions = append(o.LLMOptions, func(o *llm.Options) { o.Threads = 1 })
	})
	if err != nil {
		log.Fatal(err) // says which object, which bytes, and what to do
	}
	defer model.Close()
	// stats.String() tells the cold start: first byte, last byte,
	// verified, ready.

	_, err = model.Chat(ctx, []llm.Message{{Role: llm.RoleUser, Content: "Why is the sky blue?"}},
		func(piece string) error { return nil }, // streamed as generated: print it, send it
		func(o *llm.ChatOptions) { o.MaxTokens = 8 })
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready after the last byte:", stats.Ready.After(stats.LastByte))
	// Output: ready after the last byte: true
}

// With NoRepack, llama.cpp's load runs while the weights download, and the
// model is ready a moment after the last byte; prompts are slower without
// the repacked weights (BENCHMARKS.md).
func ExampleLoad_noRepack() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Fatal(err)
	}
	model, stats, err := memload.Load(ctx, s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true }),
		"s3://models/tiny.gguf", func(o *memload.Options) {
			o.LLMOptions = append(o.LLMOptions, func(o *llm.Options) { o.NoRepack, o.Threads = true, 1 })
		})
	if err != nil {
		log.Fatal(err)
	}
	defer model.Close()
	fmt.Println("loaded during the download:", stats.Model.Early)
	// Output: loaded during the download: true
}
