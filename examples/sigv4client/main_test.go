package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

var testCreds = credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token")

// verify checks a request's SigV4 signature as a Function URL does: it
// signs the same method, URL, signed headers and received body again with
// the AWS SDK's signer, at the request's X-Amz-Date, and compares.
func verify(r *http.Request, body []byte, creds aws.Credentials, region string) error {
	auth := r.Header.Get("Authorization")
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return fmt.Errorf("Authorization %q is not SigV4", auth)
	}
	fields := map[string]string{}
	for _, f := range strings.Split(strings.TrimPrefix(auth, algo), ", ") {
		k, v, _ := strings.Cut(f, "=")
		fields[k] = v
	}
	date, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return fmt.Errorf("X-Amz-Date: %v", err)
	}
	if d := time.Since(date); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("signed at %v, more than 5 minutes away", date)
	}
	scope := fmt.Sprintf("%s/%s/%s/lambda/aws4_request", creds.AccessKeyID, date.Format("20060102"), region)
	if fields["Credential"] != scope {
		return fmt.Errorf("credential scope %q, want %q", fields["Credential"], scope)
	}
	sum := sha256.Sum256(body)
	bodyHash := hex.EncodeToString(sum[:])
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != bodyHash {
		return fmt.Errorf("X-Amz-Content-Sha256 %s, but the body received hashes to %s", h, bodyHash)
	}
	again, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	again.ContentLength = r.ContentLength
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		if h != "host" {
			again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, again, bodyHash, "lambda", region, date); err != nil {
		return err
	}
	if got, want := auth, again.Header.Get("Authorization"); got != want {
		return fmt.Errorf("signature mismatch:\n got %s\nwant %s", got, want)
	}
	return nil
}

// functionURL stands in for a Lambda Function URL with AuthType AWS_IAM:
// it refuses requests whose signature does not verify, fails the first
// attempt of each request with a 500 (so that the SDK retries) and
// answers the rest as the chatbot does.
type functionURL struct {
	t      *testing.T
	mu     sync.Mutex
	seen   []string // per attempt: X-Stainless-Retry-Count and signature
	failed map[string]bool
}

func (f *functionURL) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	creds, _ := testCreds.Retrieve(context.Background())
	if err := verify(r, body, creds, "eu-west-1"); err != nil {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `{"Message":%q}`, err.Error())
		return
	}
	f.mu.Lock()
	f.seen = append(f.seen, r.Header.Get("X-Stainless-Retry-Count")+" "+r.Header.Get("Authorization"))
	first := !f.failed[string(body)]
	f.failed[string(body)] = true
	f.mu.Unlock()
	if first {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"error":{"message":"try again","type":"server_error"}}`)
		return
	}
	if r.Method == http.MethodGet {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"m","object":"model","created":1,"owned_by":"memload"}]}`)
		return
	}
	if strings.Contains(string(body), `"stream":true`) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, d := range []string{`{"role":"assistant"}`, `{"content":"Blue"}`, `{"content":" light."}`} {
			fmt.Fprintf(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":%s,\"finish_reason\":null}]}\n\n", d)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Blue light."},"finish_reason":"stop"}]}`)
}

func TestSigningTransport(t *testing.T) {
	fn := &functionURL{t: t, failed: map[string]bool{}}
	srv := httptest.NewServer(fn)
	defer srv.Close()
	// Retries are quick in a test; the SDK waits about half a second.
	client := newClient(srv.URL+"/", &SigningTransport{Credentials: testCreds, Region: "eu-west-1"})
	ctx := context.Background()
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Why is the sky blue? ☀")}

	c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "m", Messages: msgs}, option.WithMaxRetries(2))
	if err != nil {
		t.Fatal(err)
	}
	if c.Choices[0].Message.Content != "Blue light." {
		t.Errorf("answer %q", c.Choices[0].Message.Content)
	}
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "m", Messages: msgs, MaxTokens: openai.Int(9)}, option.WithMaxRetries(2))
	var text string
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) > 0 {
			text += ch.Choices[0].Delta.Content
		}
	}
	if err := stream.Err(); err != nil || text != "Blue light." {
		t.Errorf("stream %q, %v", text, err)
	}
	models, err := client.Models.List(ctx, option.WithMaxRetries(2)) // a GET: the empty body's hash
	if err != nil || len(models.Data) != 1 {
		t.Errorf("models: %+v %v", models, err)
	}

	// Each request took two attempts, each signed and verified on its own:
	// the retry's X-Stainless-Retry-Count differs, so an old signature
	// would not have verified.
	if len(fn.seen) != 6 {
		t.Fatalf("attempts %q", fn.seen)
	}
	for i := 0; i < 6; i += 2 {
		if fn.seen[i] == fn.seen[i+1] || !strings.HasPrefix(fn.seen[i], "0 ") || !strings.HasPrefix(fn.seen[i+1], "1 ") {
			t.Errorf("attempts %q and %q: want retry counts 0 and 1 with their own signatures", fn.seen[i], fn.seen[i+1])
		}
	}
}

// TestVerifyRefuses makes sure the test's verifier is not a rubber stamp:
// a body changed after signing, another region, or an unsigned request
// fail.
func TestVerifyRefuses(t *testing.T) {
	creds, _ := testCreds.Retrieve(context.Background())
	signed := func() (*http.Request, []byte) {
		var sent *http.Request
		var body []byte
		tr := &SigningTransport{Credentials: testCreds, Region: "eu-west-1", Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			sent = r
			body, _ = io.ReadAll(r.Body)
			return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
		})}
		req, _ := http.NewRequest("POST", "http://127.0.0.1:9/v1/chat/completions", strings.NewReader(`{"messages":[]}`))
		req.Header.Set("Authorization", "Bearer sk-x")
		req.Header.Set("Content-Type", "application/json")
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if req.Header.Get("Authorization") != "Bearer sk-x" {
			t.Error("RoundTrip changed the caller's request")
		}
		sent.Host = sent.URL.Host
		return sent, body
	}
	r, body := signed()
	if err := verify(r, body, creds, "eu-west-1"); err != nil {
		t.Fatalf("a signed request: %v", err)
	}
	if err := verify(r, []byte(`{"messages":[1]}`), creds, "eu-west-1"); err == nil {
		t.Error("a changed body verified")
	}
	if err := verify(r, body, creds, "us-east-1"); err == nil {
		t.Error("another region verified")
	}
	r.Header.Set("Content-Type", "text/plain")
	if err := verify(r, body, creds, "eu-west-1"); err == nil {
		t.Error("a changed signed header verified")
	}
	r.Header.Del("Authorization")
	if err := verify(r, body, creds, "eu-west-1"); err == nil {
		t.Error("an unsigned request verified")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestRegionOf(t *testing.T) {
	for u, want := range map[string]string{
		"https://abcdefg.lambda-url.us-east-1.on.aws/": "us-east-1",
		"https://abcdefg.lambda-url.eu-west-1.on.aws":  "eu-west-1",
		"http://127.0.0.1:8080/":                       "",
		"https://chat.example.com/":                    "",
	} {
		if got := regionOf(u); got != want {
			t.Errorf("regionOf(%s) = %q, want %q", u, got, want)
		}
	}
}
