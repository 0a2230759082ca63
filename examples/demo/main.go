// Command demo runs the Lambda chatbot on this machine, the way it runs in
// AWS: it starts a local MinIO, generates a model and uploads it, then
// starts the chatbot with MODEL_URI pointing at it, so that the whole path
// S3 → memfd → llama.cpp → streamed answers can be seen without an AWS
// account. It prints the chat page's URL and the cold-start breakdown,
// asks one question through the OpenAI-compatible API, and serves until
// Ctrl-C.
//
//	go run ./examples/demo -chatbot .bin/chatbot
//
// No model can be downloaded here, so the model is generated: by default
// with the shapes and quantisation of DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M
// (1.1 GB, cached in .cache/models), with random weights. It loads and
// runs at that model's real speed, but its answers are gibberish.
//
// With -link (lambda-like, lambda-like-slow-tail, lambda-quota-2GB,
// lambda-quota-10GB, 300MB/s, 800MB/s; see testutil.Links), MinIO
// sits behind a testutil.Shaper that gives it a Lambda-shaped network: a
// stand-in built from published measurements, not Lambda itself. The demo
// then shows the cold start phase by phase, with a progress bar on a
// terminal (plain lines otherwise), and the download next to the link's
// ceiling.
//
//	go run ./examples/demo -chatbot .bin/chatbot -link lambda-like
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/internal/progress"
	"github.com/memload/memload/internal/testutil"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	chatbot := flag.String("chatbot", ".bin/chatbot", "the chatbot command to run (make chatbot builds it)")
	model := flag.String("model", "1.5b", `the generated model: "1.5b" (DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M shapes, 1.1 GB) or "tiny"`)
	addr := flag.String("addr", "127.0.0.1:8080", "where the chatbot listens")
	ask := flag.String("ask", "Why is the sky blue?", "the question asked once the model is loaded (empty: none)")
	maxTokens := flag.Int("max-tokens", 48, "tokens to generate for the question")
	exit := flag.Bool("exit", false, "stop after the question instead of serving until Ctrl-C")
	linkName := flag.String("link", "none", "put MinIO behind a shaped link: none, lambda-like, lambda-like-slow-tail, lambda-quota-2GB, lambda-quota-10GB, 300MB/s or 800MB/s")
	snap := flag.Bool("snapstart", false, "run the chatbot through SnapStart's lifecycle under lambdart (snapstart.go)")
	flag.Parse()
	link, err := testutil.LinkNamed(*linkName)
	if err != nil {
		return fmt.Errorf("-link: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	path, err := modelFile(ctx, *model)
	if err != nil {
		return err
	}
	fmt.Println("starting MinIO on 127.0.0.1 ...")
	m, err := testutil.StartMinIO(ctx)
	if err != nil {
		return err
	}
	defer m.Stop()
	key := filepath.Base(path)
	sum, size, err := upload(ctx, m, "models", key, path)
	if err != nil {
		return err
	}
	uri := "s3://models/" + key
	fmt.Printf("uploaded %s (%.2f GB), sha256 %s\n", uri, float64(size)/1e9, sum)
	endpoint := m.Endpoint
	if link != (testutil.Link{Name: "none"}) {
		sh, err := testutil.StartShaper(m.Endpoint, link)
		if err != nil {
			return err
		}
		defer sh.Close()
		endpoint = sh.URL
		fmt.Printf("MinIO behind a shaped link (a stand-in for Lambda's network, not a measurement of it):\n  %s\n", link)
		fmt.Printf("  at best %.1f s for %.2f GB (the link's ceiling)\n", link.Ceiling(size).Seconds(), float64(size)/1e9)
	}

	if *snap {
		return snapStart(ctx, snapStartRun{chatbot: *chatbot, minio: m, endpoint: endpoint, uri: uri, sum: sum,
			ask: *ask, tokens: *maxTokens, exit: *exit, out: os.Stdout})
	}

	// The chatbot, configured as the SAM template configures the function.
	cmd := exec.Command(*chatbot, "-addr", *addr)
	cmd.Env = append(os.Environ(),
		"MODEL_URI="+uri,
		"MODEL_SHA256="+sum,
		"AWS_ENDPOINT_URL_S3="+endpoint,
		"AWS_ACCESS_KEY_ID="+m.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+m.SecretKey,
		"AWS_REGION="+m.Region,
		"AWS_EC2_METADATA_DISABLED=true",
	)
	logs, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	cmd.Stdout = os.Stdout
	fmt.Printf("\n$ MODEL_URI=%s MODEL_SHA256=%s… %s -addr %s\n", uri, sum[:12], *chatbot, *addr)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	listening := make(chan string, 1)
	show := &phases{out: os.Stdout}
	go func() {
		// Pass the chatbot's log through, and pick out its URL.
		sc := bufio.NewScanner(logs)
		for sc.Scan() {
			line := sc.Text()
			show.print(func() { fmt.Fprintln(os.Stderr, "  chatbot | "+line) })
			if _, after, ok := strings.Cut(line, "msg=listening url="); ok {
				url, _, _ := strings.Cut(after, " ")
				listening <- url
			}
		}
		exited <- cmd.Wait()
	}()
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()

	var url string
	select {
	case url = <-listening:
	case err := <-exited:
		exited <- err
		return fmt.Errorf("the chatbot exited: %v", err)
	case <-ctx.Done():
		return nil
	}
	h, err := waitReady(ctx, url, exited, show)
	if err != nil {
		return err
	}
	printColdStart(os.Stdout, h)
	if link.Name != "none" && h.ColdStart.DownloadMS > 0 {
		ceiling := link.Ceiling(h.ColdStart.Bytes).Seconds()
		fmt.Printf("  the download took %.2f s, the link's ceiling is %.2f s: %.0f %% of what the link can carry\n",
			h.ColdStart.DownloadMS/1000, ceiling, 100*ceiling/(h.ColdStart.DownloadMS/1000))
	}
	fmt.Printf("\nchat page:  %s\nOpenAI API: %sv1/chat/completions\n", url, url)

	if *ask != "" {
		if err := askOnce(ctx, url, *ask, *maxTokens); err != nil {
			return err
		}
	}
	if *exit {
		return nil
	}
	fmt.Printf("\nopen %s in a browser, or:\n  curl -N %sv1/chat/completions -d '{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'\nCtrl-C stops the chatbot and MinIO.\n", url, url)
	select {
	case <-ctx.Done():
		fmt.Println("\nstopping")
		return nil
	case err := <-exited:
		exited <- err
		return fmt.Errorf("the chatbot exited: %v", err)
	}
}

// modelFile returns the path of the generated model, generating it if needed.
func modelFile(ctx context.Context, name string) (string, error) {
	switch name {
	case "1.5b":
		root, err := testutil.RepoRoot()
		if err == nil {
			matches, _ := filepath.Glob(filepath.Join(root, ".cache", "models", fmt.Sprintf("*-v%d.gguf", testutil.BenchModelVersion)))
			if len(matches) == 0 {
				fmt.Println("generating a 1.1 GB model with DeepSeek-R1-Distill-Qwen-1.5B's shapes and random weights into .cache/models (once) ...")
			}
		}
		return testutil.BenchModel(ctx)
	case "tiny":
		dir, err := os.MkdirTemp("", "memload-demo")
		if err != nil {
			return "", err
		}
		path := filepath.Join(dir, "tiny-qwen2.gguf")
		return path, testutil.WriteModel(path, testutil.TinyConfig("qwen2"))
	}
	return "", fmt.Errorf("-model %q: want 1.5b or tiny", name)
}

// upload puts the file at path into bucket/key and returns its SHA-256.
func upload(ctx context.Context, m *testutil.MinIO, bucket, key, path string) (string, int64, error) {
	if err := m.CreateBucket(ctx, bucket); err != nil {
		return "", 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, err
	}
	fmt.Printf("uploading %s (%.2f GB) to MinIO ...\n", filepath.Base(path), float64(size)/1e9)
	_, err = m.Client().PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: f, ContentLength: aws.Int64(size),
	})
	return hex.EncodeToString(h.Sum(nil)), size, err
}

type health struct {
	Status    string `json:"status"`
	Phase     string `json:"phase"`
	Model     string `json:"model"`
	Loaded    int64  `json:"loaded_bytes"`
	Total     int64  `json:"total_bytes"`
	ColdStart struct {
		Source     string  `json:"source"`
		Bytes      int64   `json:"bytes"`
		Verified   string  `json:"verified"`
		ProcessMS  float64 `json:"process_ms"`
		ConfigMS   float64 `json:"config_ms"`
		DownloadMS float64 `json:"download_ms"`
		FirstByte  float64 `json:"first_byte_ms"`
		VerifyMS   float64 `json:"verify_ms"`
		LlamaMS    float64 `json:"llama_load_ms"`
		TotalMS    float64 `json:"total_ms"`
		MiBPerSec  float64 `json:"download_mib_s"`
		ReadyAfter float64 `json:"ready_after_last_byte_ms"`
		Early      bool    `json:"early_load"`
		Repack     bool    `json:"repack"`
		Threads    int     `json:"threads"`
		Template   string  `json:"template"`
		Error      string  `json:"error"`
	} `json:"cold_start"`
}

// phases shows the load's progress as /healthz reports it: a line when
// the phase changes, and a progress bar while the model downloads. The
// chatbot's log lines are printed around the bar.
type phases struct {
	out   io.Writer // os.Stdout: a bar on a terminal, lines otherwise
	mu    sync.Mutex
	start time.Time
	last  string
	bar   *progress.Bar
}

// update shows the state h reports.
func (p *phases) update(h *health) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.start.IsZero() {
		p.start = time.Now()
	}
	if h.Phase != p.last {
		if p.bar != nil {
			p.bar.Set(h.Loaded)
			p.bar.Done()
			p.bar = nil
		}
		p.last = h.Phase
		fmt.Fprintf(p.out, "  %6.2f s  %s\n", time.Since(p.start).Seconds(), phaseWords[h.Phase])
	}
	if h.Phase == "download" && h.Total > 0 {
		if p.bar == nil {
			p.bar = progress.New(p.out, "          download", h.Total)
		}
		p.bar.Set(h.Loaded)
	}
}

// print runs f, which prints lines, around the bar if there is one.
func (p *phases) print(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Interrupt(f)
		return
	}
	f()
}

var phaseWords = map[string]string{
	"config":    "config: AWS configuration, S3 client",
	"download":  "download: S3 -> memfd, each part hashed as it lands",
	"verify":    "verify: the last parts' SHA-256",
	"llama.cpp": "llama.cpp: loading the model from the memfd",
	"ready":     "ready",
	"failed":    "failed",
}

// waitReady polls /healthz until the model is loaded, showing its phases.
func waitReady(ctx context.Context, url string, exited chan error, show *phases) (*health, error) {
	for {
		var h health
		resp, err := http.Get(url + "healthz")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
		}
		if err == nil {
			show.update(&h)
		}
		switch {
		case err != nil:
			return nil, err
		case h.Status == "ready":
			return &h, nil
		case h.Status == "failed":
			return nil, fmt.Errorf("the chatbot could not load the model: %s", h.ColdStart.Error)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("the chatbot exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// printColdStart writes the cold start h reports to w, phase by phase.
func printColdStart(w io.Writer, h *health) {
	c := h.ColdStart
	s := func(ms float64) string { return fmt.Sprintf("%6.2f s", ms/1000) }
	fmt.Fprintf(w, "\ncold start of %s (%.2f GB), %s from the process's start:\n", c.Source, float64(c.Bytes)/1e9, strings.TrimSpace(s(c.TotalMS)))
	fmt.Fprintf(w, "  start + AWS config %s\n", s(c.ProcessMS+c.ConfigMS))
	fmt.Fprintf(w, "  download           %s  (%.0f MiB/s, first byte after %.0f ms)\n", s(c.DownloadMS), c.MiBPerSec, c.FirstByte)
	fmt.Fprintf(w, "  verify             %s  (%s)\n", s(c.VerifyMS), c.Verified)
	when := "after the download"
	if c.Early {
		when = "during the download"
	}
	fmt.Fprintf(w, "  llama.cpp load     %s  (%s; repacking %v; %d threads, %s template)\n", s(c.LlamaMS), when, c.Repack, c.Threads, c.Template)
	if c.ReadyAfter > 0 {
		fmt.Fprintf(w, "  ready after the last byte %s\n", s(c.ReadyAfter))
	}
}

// askOnce asks a question through the OpenAI-compatible API, streamed, and
// prints the answer as it arrives.
func askOnce(ctx context.Context, url, question string, maxTokens int) error {
	body, _ := json.Marshal(map[string]any{
		"stream": true, "max_tokens": maxTokens,
		"messages": []map[string]string{{"role": "user", "content": question}},
	})
	req, err := http.NewRequestWithContext(ctx, "POST", url+"v1/chat/completions", strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("chat: %s %s", resp.Status, b)
	}
	fmt.Printf("\n> %s\n", question)
	sc := bufio.NewScanner(resp.Body)
	thinking, answering := false, false
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content          string `json:"content"`
					ReasoningContent string `json:"reasoning_content"`
				} `json:"delta"`
			} `json:"choices"`
			Timings *struct {
				PromptN            int     `json:"prompt_n"`
				PromptPerSecond    float64 `json:"prompt_per_second"`
				PredictedN         int     `json:"predicted_n"`
				PredictedPerSecond float64 `json:"predicted_per_second"`
				FirstTokenMS       float64 `json:"first_token_ms"`
			} `json:"timings"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return err
		}
		if len(chunk.Choices) > 0 {
			// A thinking model's reasoning comes first, apart from the answer.
			d := chunk.Choices[0].Delta
			if d.ReasoningContent != "" && !thinking {
				thinking = true
				fmt.Print("(thinking) ")
			}
			if d.Content != "" && thinking && !answering {
				fmt.Print("\n(answer) ")
			}
			answering = answering || d.Content != ""
			fmt.Print(d.ReasoningContent, d.Content)
		}
		if t := chunk.Timings; t != nil {
			fmt.Printf("\n\n%d prompt tokens at %.1f tokens/s, first token after %.0f ms; %d tokens generated at %.1f tokens/s\n",
				t.PromptN, t.PromptPerSecond, t.FirstTokenMS, t.PredictedN, t.PredictedPerSecond)
		}
	}
	return sc.Err()
}
