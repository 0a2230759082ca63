// Command sigv4client asks the chatbot a question through its Function URL
// with AuthType AWS_IAM, the template's default: the official OpenAI Go SDK
// (github.com/openai/openai-go/v3) with an http.RoundTripper that signs
// every attempt with AWS Signature Version 4 for the service "lambda",
// the request body's SHA-256 included. Credentials come from the usual AWS
// chain (environment, ~/.aws, SSO, instance or task role).
//
//	go run ./examples/sigv4client -url https://abc.lambda-url.us-east-1.on.aws/ "Why is the sky blue?"
//
// The caller needs lambda:InvokeFunctionUrl on the function.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sigv4client:", err)
		os.Exit(1)
	}
}

func run() error {
	fnURL := flag.String("url", os.Getenv("FUNCTION_URL"), "the Function URL (default $FUNCTION_URL)")
	region := flag.String("region", "", "the function's region (default: from the URL, else the AWS configuration)")
	maxTokens := flag.Int("max-tokens", 256, "the answer's token limit")
	flag.Parse()
	if *fnURL == "" || flag.NArg() == 0 {
		return errors.New(`usage: sigv4client -url https://<id>.lambda-url.<region>.on.aws/ "question"`)
	}
	ctx := context.Background()
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("AWS configuration: %w", err)
	}
	if *region == "" {
		*region = regionOf(*fnURL)
	}
	if *region == "" {
		*region = awsCfg.Region
	}
	if *region == "" {
		return errors.New("no region: give -region, or a Function URL with one")
	}
	client := newClient(*fnURL, &SigningTransport{Credentials: awsCfg.Credentials, Region: *region})

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:     "chatbot", // the function serves one model, whatever the name
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage(strings.Join(flag.Args(), " "))},
		MaxTokens: openai.Int(int64(*maxTokens)),
	})
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) > 0 {
			fmt.Print(c.Choices[0].Delta.Content)
		}
	}
	fmt.Println()
	return stream.Err()
}

// newClient returns an OpenAI client for the chatbot at fnURL whose
// requests go through t.
func newClient(fnURL string, t *SigningTransport) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(strings.TrimSuffix(fnURL, "/")+"/v1/"),
		option.WithAPIKey("unused"), // the transport replaces it with the signature
		option.WithHTTPClient(&http.Client{Transport: t}),
	)
}

// regionOf returns the region of a Function URL,
// https://<id>.lambda-url.<region>.on.aws/, or "".
func regionOf(fnURL string) string {
	u, err := url.Parse(fnURL)
	if err != nil {
		return ""
	}
	parts := strings.Split(u.Hostname(), ".")
	if len(parts) == 5 && parts[1] == "lambda-url" && parts[3] == "on" && parts[4] == "aws" {
		return parts[2]
	}
	return ""
}

// SigningTransport signs each request with SigV4 for a Lambda Function URL
// and sends it with Base. Every attempt is signed afresh: an SDK retry
// gets a new date and signature (and OpenAI's SDK changes a header of its
// own on each retry).
type SigningTransport struct {
	Credentials aws.CredentialsProvider
	Region      string
	Base        http.RoundTripper // default http.DefaultTransport
	Now         func() time.Time  // default time.Now
}

// RoundTrip signs a copy of r, whose body it reads to hash, and sends it.
func (t *SigningTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("sigv4: reading the body to sign: %w", err)
		}
	}
	req := r.Clone(r.Context()) // a RoundTripper must not change r
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	req.ContentLength = int64(len(body))
	// The bearer token would take the Authorization header the signature
	// goes in.
	req.Header.Del("Authorization")
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)

	creds, err := t.Credentials.Retrieve(req.Context())
	if err != nil {
		return nil, fmt.Errorf("sigv4: AWS credentials: %w", err)
	}
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	if err := v4.NewSigner().SignHTTP(req.Context(), creds, req, payloadHash, "lambda", t.Region, now()); err != nil {
		return nil, fmt.Errorf("sigv4: %w", err)
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(req)
}
