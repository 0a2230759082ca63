// Command benchllm measures llm on a model of the DeepSeek-R1-Distill-Qwen-1.5B
// shape (Q4_K_M, 1.1 GB, random weights: see testutil.BenchConfig): load time
// and memory, prompt evaluation and generation speed, for llama.cpp with the
// CPU variant ggml picks here and with only the AVX2 (haswell) variant
// present, repacking on and off, the memfd's pages of repacked weights given
// back or kept, at each thread count. With -old it also runs the engine
// before this one (ollama v0.11.4's cgo binding, built by make bench-llm
// from git history), side by side in the same run.
//
// The model is copied into a memfd first, as s3load would leave it, and
// loaded with LoadFile and CloseFile. The gated rows instead write the
// model into the memfd at -rate MB/s, as a download would, while an
// llm.EarlyLoad loads it, llama.cpp repacking each tensor as soon as it is
// written; their load column is the time from the last byte to the model
// being ready. Each configuration runs in a fresh child process, so that
// memory figures are not inherited from an earlier load. Run it with make
// bench-llm, or:
//
//	go run ./internal/benchllm -rounds 3 [-old PATH]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/memload/memload/internal/machine"
	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/memfd"
)

func main() {
	threads := flag.String("threads", "1,2", "comma-separated thread counts")
	promptWords := flag.Int("prompt", 50, "words in the prompt (about 2 tokens each with the generated vocabulary)")
	gen := flag.Int("gen", 32, "tokens to generate")
	rounds := flag.Int("rounds", 3, "runs of each configuration; the table shows the best")
	modelPath := flag.String("model", "", "GGUF model (default: the generated 1.5B-shaped model in .cache/models)")
	old := flag.String("old", "", "benchllm binary of the previous engine, to run side by side")
	child := flag.String("child", "", "internal: run one configuration, given as mmap,threads")
	repack := flag.Bool("repack", true, "internal: the child's repacking")
	giveBack := flag.Bool("giveback", true, "internal: the child gives back repacked pages")
	gated := flag.Bool("gated", false, "internal: the child loads while it writes the memfd")
	rate := flag.Float64("rate", 300, "MB/s at which the gated rows write the model, as a download")
	turns := flag.Int("turns", 8, "turns of the conversation that measures prompt reuse (0: none)")
	conversation := flag.Bool("conversation", false, "internal: the child has the conversation")
	flag.Parse()
	log.SetFlags(0)

	if *conversation {
		r, err := converse(*modelPath, *child, *turns)
		if err != nil {
			log.Fatal(err)
		}
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}

	if *child != "" {
		c := config{Repack: *repack, GiveBack: *giveBack, Gated: *gated, Rate: *rate}
		if _, err := fmt.Sscanf(*child, "%t,%d", &c.Mmap, &c.Threads); err != nil {
			log.Fatal(err)
		}
		r, err := run(*modelPath, c, *promptWords, *gen)
		if err != nil {
			log.Fatal(err)
		}
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}

	path := *modelPath
	if path == "" {
		start := time.Now()
		var err error
		if path, err = testutil.BenchModel(context.Background()); err != nil {
			log.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			log.Printf("generated %s in %v", path, d.Round(time.Millisecond))
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		log.Fatal(err)
	}
	haswell, err := haswellOnly()
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(haswell)

	configs := []config{
		{Engine: "new", Variant: "best", Repack: true, GiveBack: true, Gated: true, Rate: *rate},
		{Engine: "new", Variant: "haswell", Repack: true, GiveBack: true, Gated: true, Rate: *rate},
		{Engine: "new", Variant: "best", Repack: true, GiveBack: true},
		{Engine: "new", Variant: "best", Repack: true},
		{Engine: "new", Variant: "best"},
		{Engine: "new", Variant: "haswell", Repack: true, GiveBack: true},
		{Engine: "new", Variant: "haswell", Repack: true},
		{Engine: "new", Variant: "haswell"},
	}
	if *old != "" {
		configs = append([]config{{Engine: "old", Variant: "x86-64-v3 build"}}, configs...)
	}
	var results []result
	for _, t := range strings.Split(*threads, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(t))
		if err != nil {
			log.Fatalf("-threads: %v", err)
		}
		for _, c := range configs {
			c.Mmap, c.Threads = true, n
			var rs []result
			for i := range *rounds {
				log.Printf("%s, round %d of %d", c, i+1, *rounds)
				r, err := runChild(path, c, *old, haswell, *promptWords, *gen)
				if err != nil {
					log.Fatal(err)
				}
				r.config = c
				rs = append(rs, r)
			}
			results = append(results, best(rs))
		}
	}
	printReport(os.Stdout, path, fi.Size(), results)
	if *turns > 0 {
		for _, t := range strings.Split(*threads, ",") {
			exe, _ := os.Executable()
			log.Printf("conversation of %d turns, threads=%s", *turns, t)
			cmd := exec.Command(exe, "-conversation", "-child", strings.TrimSpace(t), "-model", path, "-turns", strconv.Itoa(*turns))
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				log.Fatal(err)
			}
			var r reuse
			if err := json.Unmarshal(out, &r); err != nil {
				log.Fatal(err)
			}
			if t == strings.Split(*threads, ",")[0] {
				fmt.Printf("\nPrompt reuse: a %d-token system prompt, then %d turns (user question, 16-token greedy answer); the last turn's prompt (best variant, repack on, pages given back):\n\n", r.SystemTokens, *turns)
				fmt.Println("| threads | last prompt tokens | reused | TTFT with reuse | TTFT evaluating it whole | speed-up | greedy answers equal |")
				fmt.Println("|--------:|-------------------:|-------:|----------------:|-------------------------:|---------:|---------------------:|")
			}
			fmt.Printf("| %s | %d | %d | %.3f s | %.3f s | %.1f× | %d of %d turns |\n", t, r.LastPrompt, r.LastCached, r.WithReuse.Seconds(), r.Without.Seconds(),
				r.Without.Seconds()/r.WithReuse.Seconds(), r.EqualTurns, *turns)
		}
	}
}

// reuse is what the conversation measured.
type reuse struct {
	SystemTokens, LastPrompt, LastCached int
	WithReuse, Without                   time.Duration // TTFT of the last turn
	EqualTurns                           int           // turns whose greedy answers were the same both ways
}

// converse has a conversation twice on one loaded model, evaluating every
// prompt whole and then reusing the KV cache, and reports the last turn's
// time to first token both ways.
func converse(path, threads string, turns int) (reuse, error) {
	var r reuse
	n, err := strconv.Atoi(threads)
	if err != nil {
		return r, err
	}
	f, err := os.Open(path)
	if err != nil {
		return r, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return r, err
	}
	mf, err := memfd.New("model.gguf", fi.Size())
	if err != nil {
		return r, err
	}
	if _, err := io.Copy(io.NewOffsetWriter(mf, 0), f); err != nil {
		return r, err
	}
	ctx := context.Background()
	m, err := llm.LoadFile(ctx, mf, func(o *llm.Options) { o.Threads, o.CloseFile = n, true })
	if err != nil {
		return r, err
	}
	defer m.Close()
	run := func(noReuse bool) (llm.Stats, llm.Stats, []string, error) {
		msgs := []llm.Message{{Role: llm.RoleSystem, Content: prompt(153)}} // about 400 tokens
		var first, st llm.Stats
		var answers []string
		for i := range turns {
			msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: fmt.Sprintf("Question %d: %s?", i+1, prompt(8+i))})
			var answer strings.Builder
			var err error
			st, err = m.Chat(ctx, msgs, func(s string) error { answer.WriteString(s); return nil }, func(o *llm.ChatOptions) {
				o.Temperature, o.MaxTokens, o.NoPrefixReuse = 0, 16, noReuse
			})
			if err != nil {
				return first, st, answers, err
			}
			if i == 0 {
				first = st
			}
			answers = append(answers, answer.String())
			msgs = append(msgs, llm.Message{Role: llm.RoleAssistant, Content: answer.String()})
		}
		return first, st, answers, nil
	}
	first, without, want, err := run(true)
	if err != nil {
		return r, err
	}
	_, with, got, err := run(false)
	if err != nil {
		return r, err
	}
	for i := range want {
		if i < len(got) && got[i] == want[i] {
			r.EqualTurns++
		}
	}
	r.SystemTokens = first.PromptTokens
	r.LastPrompt, r.LastCached = with.PromptTokens, with.CachedTokens
	r.WithReuse, r.Without = with.TimeToFirstToken, without.TimeToFirstToken
	return r, nil
}

type config struct {
	Engine   string // "old" (ollama's cgo binding) or "new"
	Variant  string // "best" or "haswell": the CPU variants present
	Repack   bool
	GiveBack bool
	Gated    bool    // loaded while written, at Rate MB/s (llm.EarlyLoad)
	Rate     float64 // MB/s
	Mmap     bool
	Threads  int
}

func (c config) String() string {
	s := fmt.Sprintf("%s %s repack=%v giveback=%v threads=%d", c.Engine, c.Variant, c.Repack, c.GiveBack, c.Threads)
	if c.Gated {
		s += fmt.Sprintf(" gated at %.0f MB/s", c.Rate)
	}
	return s
}

// haswellOnly returns a directory holding llama.cpp with only its AVX2
// (haswell) CPU variant, as on a host without AVX-512.
func haswellOnly() (string, error) {
	probe := llm.SystemInfo() // loads llama.cpp, finding its directory
	i, j := strings.Index(probe, "("), strings.Index(probe, "):")
	if i < 0 || j < i {
		return "", fmt.Errorf("llama.cpp: %s", probe)
	}
	src := probe[i+1 : j]
	dir, err := os.MkdirTemp("", "benchllm-haswell")
	if err != nil {
		return "", err
	}
	for _, name := range []string{"libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu-haswell.so"} {
		target, err := filepath.EvalSymlinks(filepath.Join(src, name))
		if err != nil {
			return "", err
		}
		os.Symlink(target, filepath.Join(dir, filepath.Base(target)))
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil && !os.IsExist(err) {
			return "", err
		}
	}
	return dir, nil
}

type result struct {
	config
	ModelBytes     int64
	CopyToMemfd    time.Duration // reading the file into the memfd
	Load           time.Duration // LoadFile, header check and CloseFile included
	AfterLoad      memory        // right after LoadFile returned
	AfterChat      memory        // after the measured chat: all weights touched
	PeakFootprint  int64         // highest footprint sampled during the load
	GivenBack      int64
	Early          llm.EarlyStats // the gated rows'
	System         string
	PromptTokens   int
	PromptPerSec   float64
	Generated      int
	GeneratePerSec float64
	TTFT           time.Duration
	FinishReason   string
	Rounds         int
	// Medians over the rounds, set by best.
	MedianPromptPerSec, MedianGeneratePerSec float64
}

// memory is the process's resident memory by kind, from /proc/self/status,
// and the bytes of the memfd still alive: its pages are held while a
// descriptor or a mapping exists, whether or not they count in RSS yet.
type memory struct {
	Anon, File, Shmem int64
	MemfdHeld         int64
}

// Footprint is what the process costs the machine: private memory, file
// pages, and the memfd (whose touched pages are in Shmem) counted once.
//
// Nothing is counted twice: the memfd is the process's only shared-memory
// mapping, so RssShmem is the part of the memfd's pages that are mapped
// and touched, a subset of the pages the memfd holds (st_blocks), and only
// the larger of the two is added. RssAnon holds llama.cpp's own buffers
// (repacked weights, KV cache, compute buffers), the Go heap and thread
// stacks, each once; RssFile is the executable's and the libraries' text
// actually paged in (13 MiB with the defaults). A
// load of the 1.1 GB model with the defaults measured anon 1.10 GiB, file
// 0.01 GiB, shmem 0.12 GiB, memfd held 0.13 GiB: 1.24 GiB, 1.19x the file.
func (m memory) Footprint() int64 { return m.Anon + m.File + max(m.Shmem, m.MemfdHeld) }

func readMemory(memfdHeld int64) memory {
	m := memory{MemfdHeld: memfdHeld}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return m
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "RssAnon:":
			m.Anon = kb << 10
		case "RssFile:":
			m.File = kb << 10
		case "RssShmem:":
			m.Shmem = kb << 10
		}
	}
	return m
}

func runChild(path string, c config, old, haswell string, promptWords, gen int) (result, error) {
	exe, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	args := []string{"-child", fmt.Sprintf("%t,%d", c.Mmap, c.Threads), "-model", path,
		"-prompt", strconv.Itoa(promptWords), "-gen", strconv.Itoa(gen)}
	if c.Engine == "old" {
		exe = old
	} else {
		args = append(args, fmt.Sprintf("-repack=%t", c.Repack), fmt.Sprintf("-giveback=%t", c.GiveBack),
			fmt.Sprintf("-gated=%t", c.Gated), fmt.Sprintf("-rate=%g", c.Rate))
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	if c.Variant == "haswell" {
		cmd.Env = append(os.Environ(), llm.LibraryEnv+"="+haswell)
	}
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", c, err)
	}
	var r result
	return r, json.Unmarshal(out, &r)
}

// prompt is English-like text of n words, so that its token count is
// what a user's prompt of that length would give with this vocabulary.
func prompt(n int) string {
	words := strings.Fields(`the model is loaded from memory into llama cpp and
		answers a question about files that never touched a disk because the
		bytes came from object storage in parallel ranges`)
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[i%len(words)])
	}
	return b.String()
}

func run(path string, c config, promptWords, gen int) (result, error) {
	ctx := context.Background()
	r := result{config: c}
	src, err := os.Open(path)
	if err != nil {
		return r, err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return r, err
	}
	r.ModelBytes = fi.Size()

	start := time.Now()
	f, err := memfd.New("model.gguf", r.ModelBytes)
	if err != nil {
		return r, err
	}
	if !c.Gated {
		if _, err := io.Copy(io.NewOffsetWriter(f, 0), src); err != nil {
			return r, err
		}
		r.CopyToMemfd = time.Since(start)
	}

	// Sample the footprint while llama.cpp loads: the memfd is alive
	// throughout (a duplicate descriptor tells how much of it is held),
	// and llama.cpp's buffers grow next to it.
	dup, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return r, err
	}
	var mu sync.Mutex
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			fp := readMemory(held(dup)).Footprint()
			mu.Lock()
			r.PeakFootprint = max(r.PeakFootprint, fp)
			mu.Unlock()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	opts := func(o *llm.Options) {
		o.Threads, o.NoMmap, o.CloseFile = c.Threads, !c.Mmap, true
		o.NoRepack, o.KeepRepacked = !c.Repack, !c.GiveBack
	}
	var m *llm.Model
	if c.Gated {
		var e *llm.EarlyLoad
		e, err = writeGated(ctx, src, f, c.Rate, opts)
		lastByte := time.Now() // the load column is ready - last byte
		r.CopyToMemfd, start = lastByte.Sub(start), lastByte
		m, err = e.Finish(f, err)
		r.Early = e.Stats()
	} else {
		start = time.Now()
		m, err = llm.LoadFile(ctx, f, opts)
	}
	r.Load = time.Since(start)
	close(done)
	wg.Wait()
	if err != nil {
		return r, err
	}
	defer m.Close()
	r.GivenBack, r.System = m.GivenBack(), llm.SystemInfo()
	// llama.cpp's mapping keeps the closed memfd alive: what it holds is
	// known until the duplicate descriptor is closed.
	memfdHeld := int64(0)
	if c.Mmap {
		memfdHeld = held(dup)
	}
	unix.Close(dup)
	r.AfterLoad = readMemory(memfdHeld)

	greedy := func(n int) func(*llm.ChatOptions) {
		return func(o *llm.ChatOptions) { o.Temperature, o.MaxTokens = 0, n }
	}
	// Warm up: the first decode allocates llama.cpp's compute graph.
	if _, err := m.Chat(ctx, []llm.Message{{Role: llm.RoleUser, Content: "Hi"}}, nil, greedy(1)); err != nil {
		return r, err
	}
	msgs := []llm.Message{{Role: llm.RoleUser, Content: prompt(promptWords)}}
	st, err := m.Chat(ctx, msgs, nil, greedy(gen))
	if err != nil {
		return r, err
	}
	r.AfterChat = readMemory(memfdHeld)
	r.PromptTokens, r.PromptPerSec = st.PromptTokens, st.PromptTokensPerSecond()
	r.Generated, r.GeneratePerSec = st.GeneratedTokens, st.GenerateTokensPerSecond()
	r.TTFT, r.FinishReason = st.TimeToFirstToken, st.FinishReason
	return r, nil
}

// writeGated writes src into f at rate MB/s, telling an EarlyLoad that
// loads it of each 16 MiB in place as s3load tells of each part, and
// returns the EarlyLoad once the last byte is written. The writer
// verifies nothing, so each piece is also Verified at once: the repacked
// tensors' pages go as soon as llama.cpp has repacked them. (It copies
// through a 1 MiB buffer, so as not to count a large one in the
// footprint.)
func writeGated(ctx context.Context, src io.ReaderAt, f *memfd.File, rate float64, opts func(*llm.Options)) (*llm.EarlyLoad, error) {
	e := llm.NewEarlyLoad(ctx, opts)
	buf := make([]byte, 1<<20)
	start := time.Now()
	for off := int64(0); off < f.Size(); {
		n, err := src.ReadAt(buf[:min(int64(len(buf)), f.Size()-off)], off)
		if n == 0 {
			return e, fmt.Errorf("read the model at %d: %w", off, err)
		}
		// The bytes arrive no sooner than the rate allows.
		if due := start.Add(time.Duration(float64(off+int64(n)) / (rate * 1e6) * float64(time.Second))); time.Until(due) > 0 {
			time.Sleep(time.Until(due))
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return e, err
		}
		off += int64(n)
		if off%(16<<20) == 0 || off == f.Size() {
			e.Written(f, off)
			e.Verified(off)
		}
	}
	return e, nil
}

// held returns the bytes of memory the file fd holds.
func held(fd int) int64 {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}

// best keeps the best time and speed of each measure over runs of one
// configuration, which is what the hardware can do, and the median speeds,
// which is what to expect: on a small VM, two threads are often slowed by
// anything else that runs, since ggml's threads wait for each other at
// every operation. Memory figures do not vary between runs; the first
// run's are kept.
func best(rs []result) result {
	b := rs[0]
	for _, r := range rs[1:] {
		b.Load = min(b.Load, r.Load)
		b.CopyToMemfd = min(b.CopyToMemfd, r.CopyToMemfd)
		b.PromptPerSec = max(b.PromptPerSec, r.PromptPerSec)
		b.GeneratePerSec = max(b.GeneratePerSec, r.GeneratePerSec)
		b.TTFT = min(b.TTFT, r.TTFT)
		b.PeakFootprint = max(b.PeakFootprint, r.PeakFootprint)
	}
	b.Rounds = len(rs)
	median := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	b.MedianPromptPerSec = median(func(r result) float64 { return r.PromptPerSec })
	b.MedianGeneratePerSec = median(func(r result) float64 { return r.GeneratePerSec })
	return b
}

func printReport(w io.Writer, path string, size int64, rs []result) {
	fmt.Fprintf(w, "date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "machine: %s\n", machine.Describe())
	fmt.Fprintf(w, "new engine: %s\n", llm.SystemInfo())
	fmt.Fprintf(w, "model: %s (%s)\n", path, gib(size))
	fmt.Fprintf(w, "%d runs per row, each in a fresh process (speeds: best / median; load: best); the model is read into a memfd, then llm.LoadFile with CloseFile and mmap\n", rs[0].Rounds)
	fmt.Fprintf(w, "command: %s\n\n", "go run ./internal/benchllm "+strings.Join(os.Args[1:], " "))
	fmt.Fprintln(w, "| engine | CPU variant | repack | given back | threads | load | footprint after load | peak during load | prompt tok/s | × old | gen tok/s | best TTFT |")
	fmt.Fprintln(w, "|--------|-------------|--------|-----------:|--------:|-----:|---------------------:|-----------------:|-------------:|------:|----------:|----------:|")
	oldPrompt := map[int]float64{}
	for _, r := range rs {
		if r.Engine == "old" {
			oldPrompt[r.Threads] = r.MedianPromptPerSec
		}
	}
	for _, r := range rs {
		variant := r.Variant
		if r.Engine == "new" {
			variant = variantOf(r.System)
		}
		ratio := "-"
		if o := oldPrompt[r.Threads]; o > 0 {
			ratio = fmt.Sprintf("%.2f", r.MedianPromptPerSec/o)
		}
		engine := r.Engine
		if r.Gated {
			engine += fmt.Sprintf(", gated, written at %.0f MB/s", r.Rate)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d | %.2f s | %s (%.2f×) | %s (%.2f×) | %.1f / %.1f | %s | %.1f / %.1f | %.2f s |\n",
			engine, variant, onOff(r.Repack), gib(r.GivenBack), r.Threads, r.Load.Seconds(),
			gib(r.AfterLoad.Footprint()), float64(r.AfterLoad.Footprint())/float64(size),
			gib(r.PeakFootprint), float64(r.PeakFootprint)/float64(size),
			r.PromptPerSec, r.MedianPromptPerSec, ratio,
			r.GeneratePerSec, r.MedianGeneratePerSec, r.TTFT.Seconds())
	}
	fmt.Fprintf(w, "\n%d prompt tokens, %d generated. footprint = RssAnon + RssFile + max(RssShmem, bytes the memfd still holds); × is to the model file. After chat, in detail:\n",
		rs[0].PromptTokens, rs[0].Generated)
	for _, r := range rs {
		m := r.AfterChat
		fmt.Fprintf(w, "  %-48s anon %s, file %s, shmem %s, memfd held %s\n",
			r.config.String()+":", gib(m.Anon), gib(m.File), gib(m.Shmem), gib(m.MemfdHeld))
	}
	fmt.Fprintf(w, "\nThe gated rows write the model into the memfd at the rate shown, as a download, while llm.EarlyLoad loads it;\n"+
		"their load is the time from the last byte to the model being ready. What the gate did (first round):\n")
	for _, r := range rs {
		if r.Gated {
			fmt.Fprintf(w, "  %-48s written in %.2f s; gated %v, llama.cpp waited %d times, %.2f s in all; fallback: %q\n",
				r.config.String()+":", r.CopyToMemfd.Seconds(), r.Early.Gated, r.Early.Waits, r.Early.Waited.Seconds(), r.Early.Fallback)
		}
	}
}

// variantOf picks the CPU variant out of llm.SystemInfo's text.
func variantOf(info string) string {
	_, v, ok := strings.Cut(info, "CPU variant ")
	if !ok {
		return "?"
	}
	v, _, _ = strings.Cut(v, " ")
	return v
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func gib(n int64) string { return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30)) }
