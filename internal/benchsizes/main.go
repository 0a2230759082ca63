// Command benchsizes runs the chatbot as Lambda would at each memory size
// this machine can emulate, and prints the AWS write-up's Table 1 columns:
// prompt and generation speed, duration and billed GB-seconds per answer
// (x86 and arm64 prices), cold start and peak memory. It then bisects for
// the smallest memory size at which the model loads and answers.
//
// Each run starts the chatbot (built as make chatbot does) inside a memory
// and CPU cgroup of its own: memory.max (v1: memory.limit_in_bytes, and
// memsw where swap is accounted) = the size in MiB, and a CFS quota of
// size/1769 of a vCPU, as Lambda allots CPU. The model, a 1.1 GB random-
// weight GGUF of the DeepSeek-R1-Distill-Qwen-1.5B shape, is loaded from a
// local MinIO on a cold start, then one fixed chat is asked: a prompt of
// 125 tokens, 128 tokens generated greedily. It must run as root (cgroups):
//
//	make bench-sizes
//	go run ./internal/benchsizes -sizes 1024,1769,3538 -min=false
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/memload/memload/internal/machine"
	"github.com/memload/memload/internal/testutil"
)

// Lambda's prices in US East (N. Virginia), first tier, from
// https://aws.amazon.com/lambda/pricing/ (checked 2026-12-01).
const (
	priceX86     = 0.0000166667 // USD per GB-second, x86_64
	priceARM     = 0.0000133334 // USD per GB-second, arm64
	priceRequest = 0.20 / 1e6   // USD per request
)

func main() {
	sizes := flag.String("sizes", "1024,1536,1769,2048,2560,3008,3538", "memory sizes in MB (at most 2 vCPUs' worth here: 3538)")
	promptTokens := flag.Int("prompt", 125, "prompt tokens of the fixed chat")
	gen := flag.Int("gen", 128, "tokens generated")
	words := flag.Int("words", 47, "words in the prompt, skipping the calibration (47 make 126 tokens with the generated model's vocabulary); 0 to calibrate for -prompt")
	findMin := flag.Bool("min", true, "bisect for the smallest memory size that loads and answers")
	step := flag.Int("step", 16, "resolution of the bisection, MB")
	modelPath := flag.String("model", "", "GGUF model (default: the generated 1.5B-shaped model in .cache/models)")
	chatbotBin := flag.String("chatbot", "", "chatbot binary (default: built from ./examples/chatbot)")
	joinProcs := flag.String("join", "", "internal: join these cgroup.procs files (comma-separated) and exec the arguments")
	flag.Parse()
	log.SetFlags(0)
	if *joinProcs != "" {
		log.Fatal(joinAndExec(strings.Split(*joinProcs, ","), flag.Args()))
	}
	if os.Geteuid() != 0 {
		log.Fatal("benchsizes makes cgroups: run it as root")
	}
	ctx := context.Background()

	path := *modelPath
	if path == "" {
		var err error
		if path, err = testutil.BenchModel(ctx); err != nil {
			log.Fatal(err)
		}
	}
	bin := *chatbotBin
	if bin == "" {
		dir, err := os.MkdirTemp("", "benchsizes")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(dir)
		if bin, err = buildChatbot(dir); err != nil {
			log.Fatal(err)
		}
	}
	m, err := testutil.StartMinIO(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Stop()
	model, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	if err := m.CreateBucket(ctx, "models"); err != nil {
		log.Fatal(err)
	}
	if err := m.Put(ctx, "models", "model.gguf", model); err != nil {
		log.Fatal(err)
	}
	b := &bench{bin: bin, env: minioEnv(m), modelBytes: int64(len(model)), gen: *gen}
	model = nil

	var mbs []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 128 || n > 10240 {
			log.Fatalf("-sizes: %q is not a Lambda memory size (128-10240 MB)", s)
		}
		mbs = append(mbs, n)
	}
	if *words > 0 {
		b.prompt = strings.Join(promptWords(*words), " ")
	} else if b.prompt, err = b.calibrate(mbs[len(mbs)-1], *promptTokens); err != nil {
		log.Fatal(err)
	}

	fmt.Printf("# go run ./internal/benchsizes %s\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("# %s, load average %s at the start\n", machine.Describe(), machine.LoadAvg())
	fmt.Printf("# model %s (%d bytes), from MinIO on 127.0.0.1; CONTEXT_SIZE 4096 (the template's default)\n", filepath.Base(path), b.modelBytes)
	var rows []result
	for _, mb := range mbs {
		log.Printf("%d MB ...", mb)
		r := b.run(mb, b.gen)
		log.Printf("%d MB: %s", mb, r.summary())
		rows = append(rows, r)
	}
	printTable(os.Stdout, rows)

	if *findMin {
		fmt.Println()
		b.bisect(os.Stdout, rows, *step)
	}
	fmt.Printf("# load average %s at the end\n", machine.LoadAvg())
}

// buildChatbot builds the chatbot for this machine as make chatbot does.
// Kept in one place so that a change of engine changes one function.
func buildChatbot(dir string) (string, error) {
	root, err := testutil.RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "chatbot")
	cmd := exec.Command("go", "build", "-o", bin, "./examples/chatbot")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./examples/chatbot: %v\n%s", err, out)
	}
	return bin, nil
}

func minioEnv(m *testutil.MinIO) []string {
	env := []string{
		"MODEL_URI=s3://models/model.gguf",
		"AWS_ENDPOINT_URL_S3=" + m.Endpoint,
		"AWS_ACCESS_KEY_ID=" + m.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + m.SecretKey,
		"AWS_REGION=" + m.Region,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"PATH=" + os.Getenv("PATH"),
	}
	// Where llm finds llama.cpp's libraries (the Makefile sets it).
	if dir := os.Getenv("MEMLOAD_LLAMA_LIB"); dir != "" {
		env = append(env, "MEMLOAD_LLAMA_LIB="+dir)
	}
	return env
}

type bench struct {
	bin        string
	env        []string
	modelBytes int64
	prompt     string
	gen        int
}

// outcome of a run.
const (
	answered = "answered"
	refused  = "refused"    // the chatbot's own memory check said no
	killed   = "OOM-killed" // the kernel killed it at the cgroup's limit
	failed   = "failed"     // anything else
)

type result struct {
	limits
	Outcome   string
	Detail    string // the refusal or failure
	Threads   int
	ColdStart time.Duration // process start to model ready (the chatbot's total_ms)
	Download  time.Duration
	Peak      int64 // the cgroup's highest memory use
	Duration  time.Duration
	PromptN   int
	PromptPS  float64
	GenN      int
	GenPS     float64
}

func (r result) summary() string {
	if r.Outcome != answered {
		return r.Outcome + ": " + r.Detail
	}
	return fmt.Sprintf("cold start %.1f s, %d+%d tokens in %.1f s, peak %d MiB", r.ColdStart.Seconds(), r.PromptN, r.GenN, r.Duration.Seconds(), r.Peak>>20)
}

// run starts the chatbot in a fresh cgroup of mb MB, waits for its cold
// start and asks the fixed chat, generating gen tokens.
func (b *bench) run(mb, gen int) result {
	return b.runWith(mb, func(base string, r *result) error { return b.chat(base, b.prompt, gen, r) })
}

// runWith is run with other questions: ask puts them to the chatbot at
// base.
func (b *bench) runWith(mb int, ask func(base string, r *result) error) result {
	r := result{limits: lambdaLimits(mb)}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return r.fail(failed, err)
	}
	cg, err := newCgroup("/sys/fs/cgroup", self, fmt.Sprintf("memload-bench-%d-%d", os.Getpid(), mb), r.limits)
	if err != nil {
		return r.fail(failed, err)
	}
	defer cg.remove()

	exe, err := os.Executable()
	if err != nil {
		return r.fail(failed, err)
	}
	cmd := exec.Command(exe, "-join", strings.Join(cg.procs(), ","), "--", b.bin, "-addr", "127.0.0.1:0")
	cmd.Env = append(b.env, fmt.Sprintf("AWS_LAMBDA_FUNCTION_MEMORY_SIZE=%d", mb))
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return r.fail(failed, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	// ended classifies an early exit: killed by the kernel at the limit,
	// or an exit after the chatbot's own check refused.
	ended := func(err error) result {
		exited <- err
		n, _ := cg.oomKills()
		out := logs.String()
		switch {
		case n > 0:
			return r.fail(killed, fmt.Errorf("%v, %d OOM kill(s) in the cgroup", err, n))
		case strings.Contains(out, " of memory"):
			return r.fail(refused, errors.New(lastLine(out, "err=")))
		}
		return r.fail(failed, fmt.Errorf("%v: %s", err, lastLine(out, "")))
	}

	base := ""
	deadline := time.Now().Add(10 * time.Minute)
	for base == "" {
		select {
		case err := <-exited:
			return ended(err)
		case <-time.After(20 * time.Millisecond):
		}
		if _, after, ok := strings.Cut(logs.String(), "msg=listening url="); ok {
			base, _, _ = strings.Cut(after, " ")
		}
		if time.Now().After(deadline) {
			return r.fail(failed, errors.New("no listening line"))
		}
	}
	var health struct {
		Status    string
		Error     string
		ColdStart struct {
			TotalMS    float64 `json:"total_ms"`
			DownloadMS float64 `json:"download_ms"`
			Threads    int
			Error      string
		} `json:"cold_start"`
	}
	for {
		select {
		case err := <-exited:
			return ended(err)
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get(base + "healthz")
		if err != nil {
			continue
		}
		json.NewDecoder(resp.Body).Decode(&health)
		resp.Body.Close()
		if health.Status != "loading" && health.Status != "" {
			break
		}
		if time.Now().After(deadline) {
			return r.fail(failed, errors.New("the model did not load in 10 minutes"))
		}
	}
	c := health.ColdStart
	if health.Status != "ready" {
		e := c.Error + health.Error
		if strings.Contains(e, " of memory") { // memfd.MemoryError
			return r.fail(refused, errors.New(e))
		}
		return r.fail(failed, fmt.Errorf("healthz %s: %s", health.Status, e))
	}
	r.ColdStart = time.Duration(c.TotalMS * float64(time.Millisecond))
	r.Download = time.Duration(c.DownloadMS * float64(time.Millisecond))
	r.Threads = c.Threads

	answer := make(chan error, 1)
	go func() { answer <- ask(base, &r) }()
	select {
	case err := <-answer:
		if err != nil {
			select {
			case e := <-exited:
				return ended(e)
			case <-time.After(time.Second):
			}
			return r.fail(failed, err)
		}
	case err := <-exited:
		return ended(err)
	}
	if r.Peak, err = cg.peak(); err != nil {
		return r.fail(failed, err)
	}
	r.Outcome = answered
	return r
}

func (r result) fail(outcome string, err error) result {
	r.Outcome, r.Detail = outcome, err.Error()
	return r
}

// chat asks the fixed question and fills in the answer's figures.
func (b *bench) chat(base, prompt string, gen int, r *result) error {
	body, _ := json.Marshal(map[string]any{
		"messages":    []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens":  gen,
		"temperature": 0,
	})
	start := time.Now()
	resp, err := http.Post(base+"v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var a struct {
		Timings struct {
			PromptN            int     `json:"prompt_n"`
			PromptPerSecond    float64 `json:"prompt_per_second"`
			PredictedN         int     `json:"predicted_n"`
			PredictedPerSecond float64 `json:"predicted_per_second"`
		}
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	r.Duration = time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("chat: %s %s", resp.Status, raw)
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("chat: %v: %s", err, raw)
	}
	t := a.Timings
	r.PromptN, r.PromptPS, r.GenN, r.GenPS = t.PromptN, t.PromptPerSecond, t.PredictedN, t.PredictedPerSecond
	return nil
}

// calibrate finds a user message that makes a prompt of want tokens, chat
// template included, asking one chatbot at mb MB for one token at a time.
func (b *bench) calibrate(mb, want int) (string, error) {
	words := promptWords(4 * want)
	var found string
	r := b.runWith(mb, func(base string, r *result) error {
		tokens := func(prompt string) (int, error) {
			if err := b.chat(base, prompt, 1, r); err != nil {
				return 0, err
			}
			return r.PromptN, nil
		}
		// Whole words up to just below want, then one-letter words.
		var prompt []string
		for len(prompt) < want*3/10 { // about 2.7 tokens a word: start below
			prompt = append(prompt, words[len(prompt)%len(words)])
		}
		for {
			next := append(prompt, words[len(prompt)%len(words)])
			n, err := tokens(strings.Join(next, " "))
			if err != nil {
				return err
			}
			if n > want {
				break
			}
			if prompt = next; n == want {
				found = strings.Join(prompt, " ")
				return nil
			}
			if len(prompt) > 4*want {
				return fmt.Errorf("%d words make only %d tokens", len(prompt), n)
			}
		}
		for range 8 {
			prompt = append(prompt, "x")
			n, err := tokens(strings.Join(prompt, " "))
			if err != nil {
				return err
			}
			if n == want {
				found = strings.Join(prompt, " ")
				return nil
			}
			if n > want {
				break
			}
		}
		return fmt.Errorf("no prompt of exactly %d tokens found", want)
	})
	if r.Outcome != answered {
		return "", fmt.Errorf("calibrating the prompt at %d MB: %s", mb, r.summary())
	}
	log.Printf("calibration: a prompt of %d words makes %d tokens", len(strings.Fields(found)), want)
	return found, nil
}

// promptWords are the first n words of the fixed prompt.
func promptWords(n int) []string {
	w := strings.Fields("the model answers every question about the weather in the city today and tomorrow")
	var s []string
	for i := range n {
		s = append(s, w[i%len(w)])
	}
	return s
}

// bisect finds the smallest size at which the model loads and answers,
// and shows what happens just below it.
func (b *bench) bisect(w io.Writer, rows []result, step int) {
	hi, lo := 0, 128
	for _, r := range rows {
		if r.Outcome == answered && (hi == 0 || r.MemoryMB < hi) {
			hi = r.MemoryMB
		}
	}
	if hi == 0 {
		fmt.Fprintln(w, "No size answered: nothing to bisect.")
		return
	}
	for _, r := range rows {
		if r.Outcome != answered && r.MemoryMB < hi && r.MemoryMB > lo {
			lo = r.MemoryMB
		}
	}
	// The model alone needs its size; start just below that.
	lo = max(lo, int(b.modelBytes>>20)-1)
	var below result
	fmt.Fprintf(w, "Bisection between %d and %d MB (the same prompt of %d words, 16 tokens generated):\n\n", lo, hi, len(strings.Fields(b.prompt)))
	fmt.Fprintln(w, "| Memory (MB) | Outcome | Peak (MiB) | Detail |")
	fmt.Fprintln(w, "|---:|---|---:|---|")
	for hi-lo > step {
		mid := (lo + hi) / 2
		log.Printf("bisect %d MB ...", mid)
		r := b.run(mid, 16)
		fmt.Fprintf(w, "| %d | %s | %s | %s |\n", mid, r.Outcome, mib(r.Peak), trim(r.Detail, 160))
		if r.Outcome == answered {
			hi = mid
		} else {
			lo, below = mid, r
		}
	}
	fmt.Fprintf(w, "\nSmallest working size: %d MB (within %d MB); model %d MiB.\n", hi, step, b.modelBytes>>20)
	if below.Outcome != "" {
		fmt.Fprintf(w, "Just below, at %d MB: %s.\n", below.MemoryMB, below.Outcome)
	}
}

func printTable(w io.Writer, rows []result) {
	fmt.Fprintln(w, "| Memory (MB) | vCPU | Threads | Cold start (s) | Peak (MiB) | Prompt tokens/s | Generated tokens/s | Duration (s) | GB-s per answer | $ per 1000 answers x86 | $ per 1000 answers arm64 |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		if r.Outcome != answered {
			fmt.Fprintf(w, "| %d | %.2f | | %s: %s | | | | | | | |\n", r.MemoryMB, r.VCPUs(), r.Outcome, trim(r.Detail, 120))
			continue
		}
		billed := math.Ceil(float64(r.Duration)/float64(time.Millisecond)) / 1000 // 1 ms granularity
		gbs := float64(r.MemoryMB) / 1024 * billed
		fmt.Fprintf(w, "| %d | %.2f | %d | %.1f | %s | %.1f | %.1f | %.2f | %.2f | %.3f | %.3f |\n",
			r.MemoryMB, r.VCPUs(), r.Threads, r.ColdStart.Seconds(), mib(r.Peak), r.PromptPS, r.GenPS, billed, gbs,
			1000*(gbs*priceX86+priceRequest), 1000*(gbs*priceARM+priceRequest))
	}
	if len(rows) > 0 && rows[0].Outcome == answered {
		fmt.Fprintf(w, "\n(%d prompt and %d generated tokens per answer; duration is the request's wall time, billed in 1 ms steps.)\n", rows[0].PromptN, rows[0].GenN)
	}
}

func mib(n int64) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatInt(n>>20, 10)
}

func trim(s string, n int) string {
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// lastLine returns the last output line that contains key, from key on.
func lastLine(out, key string) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, key) && strings.TrimSpace(l) != "" {
			last = l
		}
	}
	if i := strings.Index(last, key); key != "" && i >= 0 {
		return last[i+len(key):]
	}
	return last
}

func execve(argv []string) error {
	if len(argv) == 0 {
		return errors.New("-join: no command")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, os.Environ())
}

// syncBuffer collects a child's output from its two pipes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
