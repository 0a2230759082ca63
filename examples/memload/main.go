// Command memload loads an S3 object into memory with s3load and prints
// how long it took. It talks to AWS with the usual credential chain, or to
// any S3-compatible server (MinIO) given with -endpoint or
// AWS_ENDPOINT_URL_S3. While it loads, it draws a progress bar (bytes,
// MB/s, time left) when stdout is a terminal, and otherwise writes a plain
// progress line to stderr every 2 s (-q: neither).
//
//	memload [flags] s3://bucket/key
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"golang.org/x/term"

	"github.com/memload/memload/internal/progress"
	"github.com/memload/memload/memfd"
	"github.com/memload/memload/s3load"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "memload:", err)
		os.Exit(1)
	}
}

func run() error {
	endpoint := flag.String("endpoint", "", "S3 endpoint URL, e.g. http://127.0.0.1:9000 for MinIO (default: AWS, or $AWS_ENDPOINT_URL_S3)")
	pathStyle := flag.Bool("path-style", false, "use path-style addressing (MinIO); implied by -endpoint")
	partSize := flag.Int64("part-size", s3load.DefaultPartSize, "bytes per ranged GET")
	concurrency := flag.Int("concurrency", s3load.DefaultConcurrency, "ranged GETs in flight at once")
	sum := flag.Bool("sha256", false, "print the SHA-256 of the loaded bytes")
	verbose := flag.Bool("v", false, "log each part")
	quiet := flag.Bool("q", false, "no progress bar or progress lines")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: memload [flags] s3://bucket/key\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		return errors.New("give exactly one s3://bucket/key")
	}
	uri := flag.Arg(0)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if *endpoint != "" {
			o.BaseEndpoint = aws.String(*endpoint)
		}
		o.UsePathStyle = *pathStyle || *endpoint != "" || os.Getenv("AWS_ENDPOINT_URL_S3") != ""
	})
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	// A bar on stdout when it is a terminal; else a line now and then on
	// stderr, keeping stdout for the summary.
	var bar atomic.Pointer[progress.Bar] // made at the first write, when the size is known
	barOut := os.Stderr
	if term.IsTerminal(int(os.Stdout.Fd())) {
		barOut = os.Stdout
	}
	logOut := io.Writer(os.Stderr)
	if barOut == os.Stdout && !*quiet {
		logOut = interrupting{&bar, os.Stderr}
	}
	loader := s3load.New(client, func(o *s3load.Options) {
		o.PartSize = *partSize
		o.Concurrency = *concurrency
		o.Logger = slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))
		if !*quiet {
			o.Progress = func(done, total int64) {
				if bar.Load() == nil {
					bar.Store(progress.New(barOut, uri, total))
				}
				bar.Load().Set(done)
			}
		}
	})

	f, stats, err := loader.Load(ctx, uri)
	if b := bar.Load(); b != nil {
		b.Done()
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Printf("loaded   %s\n", stats.Object)
	fmt.Printf("into     %s (memfd, sealed)\n", f.Path())
	fmt.Printf("size     %d bytes (%.1f MiB)\n", stats.Size, float64(stats.Size)/(1<<20))
	fmt.Printf("parts    %d × %d MiB, %d at once\n", stats.Parts, stats.PartSize>>20, stats.Concurrency)
	fmt.Printf("first    %v to the first response\n", stats.FirstByte.Round(time.Millisecond))
	fmt.Printf("elapsed  %v (%.0f MiB/s)\n", stats.Elapsed.Round(time.Millisecond), stats.Throughput()/(1<<20))
	if *sum {
		start := time.Now()
		h, err := sha256Of(f)
		if err != nil {
			return err
		}
		fmt.Printf("sha256   %s (%v)\n", h, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// interrupting writes log lines above the progress bar, once there is one.
type interrupting struct {
	bar *atomic.Pointer[progress.Bar]
	w   io.Writer
}

func (i interrupting) Write(p []byte) (n int, err error) {
	b := i.bar.Load()
	if b == nil {
		return i.w.Write(p)
	}
	b.Interrupt(func() { n, err = i.w.Write(p) })
	return n, err
}

func sha256Of(f *memfd.File) (string, error) {
	m, err := f.Map()
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(m)
	return hex.EncodeToString(s[:]), nil
}
