// Command benchcold times the chatbot's cold start on a shaped link: the
// 1.5B-shaped model (1.1 GB, see testutil.BenchConfig) from MinIO through
// a testutil.Shaper into a memfd, its SHA-256 checked, llama.cpp loaded
// from the memfd, a first token generated, phase by phase. The shaper
// stands in for Lambda's network (see testutil.Links for where its figures
// come from): no Lambda function is measured here.
//
// Each variant (see internal/bench/variant) runs in a process of its own
// behind a fresh shaper, in rotating order, for several rounds; the tables
// show medians, and each download as a share of the link's ceiling (the
// shortest time the shaped link can deliver the object in). Before the
// variants, each link's accuracy is measured with raw GETs, and printed.
// "model ready - last byte" is how long the model trails the download:
// what is left of the SHA-256 and llama.cpp's load, the chatbot's
// ready_after_last_byte_ms. memload's variants load through memload.Load,
// as the chatbot does: llama.cpp's load starts during the download where
// llm allows it (without repacking, llm.Options.NoRepack, the chatbot's
// REPACK=false; with repacking once llm gates it), and the runs that did so
// are counted in the "llama.cpp loaded" column. The peers load after the
// download. -repack both (the default) runs memload's variants with
// repacking on and off, side by side; the peers with it on.
//
//	go run ./internal/benchcold [-shapes lambda-like,...] [-variants memload,...] [-rounds 3] [-repack on|off|both]
package main

import (
	"bytes"
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
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/memload/memload/internal/bench/variant"
	"github.com/memload/memload/internal/machine"
	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
)

// rawRow is the summary's row for the raw reader of accuracy.
const rawRow = "raw reader: 32 connections, 8 MiB ranges, bytes dropped (the shaper's own accuracy, once)"

const (
	defaultShapes   = "lambda-like,lambda-like-slow-tail,lambda-quota-2GB,lambda-quota-10GB,300MB/s,800MB/s"
	defaultVariants = "memload,memload:seed,manager,transfermanager"
)

func main() {
	if v := os.Getenv("MEMLOAD_BENCH_CHILD"); v != "" {
		var t target
		if err := json.Unmarshal([]byte(os.Getenv("MEMLOAD_BENCH_TARGET")), &t); err != nil {
			fail(err)
		}
		if err := runChild(v, t); err != nil {
			fail(fmt.Errorf("%s: %w", v, err))
		}
		return
	}
	shapes := flag.String("shapes", defaultShapes, "comma-separated links of testutil.Links")
	variants := flag.String("variants", defaultVariants, "comma-separated variants, memload first: it is the reference")
	rounds := flag.Int("rounds", 3, "rounds of every variant on every link")
	model := flag.String("model", "", "GGUF model (default: the generated 1.5B-shaped model in .cache/models)")
	repack := flag.String("repack", "both", "llama.cpp's repacking of the weights: on, off (llm.Options.NoRepack) or both (memload's variants both ways)")
	noRepack := flag.Bool("norepack", false, "the same as -repack off")
	flag.Parse()
	if *noRepack {
		*repack = "off"
	}
	var links []testutil.Link
	for _, name := range strings.Split(*shapes, ",") {
		l, err := testutil.LinkNamed(name)
		if err != nil {
			fail(fmt.Errorf("-shapes: %w", err))
		}
		links = append(links, l)
	}
	rows, err := expand(strings.Split(*variants, ","), *repack)
	if err != nil {
		fail(err)
	}
	if err := run(links, rows, *rounds, *model, *repack); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchcold:", err)
	os.Exit(1)
}

// noRepackSuffix marks a row run with llm.Options.NoRepack.
const noRepackSuffix = "|norepack"

// expand makes the rows of the tables: each variant, with repacking on or
// off, or, for both, memload's variants both ways and the peers with it on.
func expand(variants []string, repack string) ([]string, error) {
	var rows []string
	for _, v := range variants {
		switch memload := strings.HasPrefix(v, "memload"); repack {
		case "on":
			rows = append(rows, v)
		case "off":
			rows = append(rows, v+noRepackSuffix)
		case "both":
			rows = append(rows, v)
			if memload {
				rows = append(rows, v+noRepackSuffix)
			}
		default:
			return nil, fmt.Errorf("-repack %q: want on, off or both", repack)
		}
	}
	return rows, nil
}

// label names a row in a table.
func label(row string) string {
	if v, ok := strings.CutSuffix(row, noRepackSuffix); ok {
		return variant.Label(v) + ", repacking off"
	}
	return variant.Label(row) + ", repacking on"
}

func run(links []testutil.Link, variants []string, rounds int, path string, repack string) error {
	ctx := context.Background()
	if path == "" {
		var err error
		if path, err = testutil.BenchModel(ctx); err != nil {
			return err
		}
	}
	m, err := testutil.StartMinIO(ctx)
	if err != nil {
		return err
	}
	defer m.Stop()
	t, err := upload(ctx, m, path)
	if err != nil {
		return err
	}

	fmt.Printf("# Cold start on a shaped link, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("Machine: %s. llama.cpp: %s; repacking: %s.\n", machine.Describe(), llm.SystemInfo(), repack)
	fmt.Printf("Model: %s, %d bytes (%.2f GB), uploaded in 8 MiB parts as `aws s3 cp` does. Rounds: %d, medians.\n",
		filepath.Base(path), t.Size, float64(t.Size)/1e9, rounds)
	fmt.Printf("Command: go run ./internal/benchcold %s\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("Load average before: %s\n\n", machine.LoadAvg())
	fmt.Println("The links are a testutil.Shaper in front of MinIO on 127.0.0.1 over plain HTTP: a stand-in for")
	fmt.Println("Lambda's network and S3, not a measurement of them. Times are from the process's start.")

	use := map[string]map[string]float64{}   // link -> row -> median share of the ceiling
	ready := map[string]map[string]float64{} // link -> row -> median model ready - last byte, s
	for _, l := range links {
		u, r, err := runLink(ctx, m, t, l, variants, rounds)
		if err != nil {
			return err
		}
		use[l.Name], ready[l.Name] = u, r
	}

	fmt.Printf("\n## Share of each link's ceiling reached by the download (medians)\n\n")
	head := "| variant |"
	rule := "| --- |"
	for _, l := range links {
		head += " " + l.Name + " |"
		rule += " ---: |"
	}
	fmt.Println(head)
	fmt.Println(rule)
	for _, v := range append([]string{rawRow}, variants...) {
		name := v
		if v != rawRow {
			name = label(v)
		}
		row := "| " + name + " |"
		for _, l := range links {
			row += fmt.Sprintf(" %.0f %% |", 100*use[l.Name][v])
		}
		fmt.Println(row)
	}
	fmt.Printf("\n## Model ready - last byte, s (medians)\n\n")
	fmt.Println(head)
	fmt.Println(rule)
	for _, v := range variants {
		row := "| " + label(v) + " |"
		for _, l := range links {
			row += fmt.Sprintf(" %.2f |", ready[l.Name][v])
		}
		fmt.Println(row)
	}
	if clean, tail := use["lambda-like"], use["lambda-like-slow-tail"]; clean != nil && tail != nil {
		fmt.Println()
		for _, v := range variants {
			fmt.Printf("%s: the slow tail costs %.1f %% of the clean link's throughput.\n", label(v), 100*(1-tail[v]/clean[v]))
		}
	}
	fmt.Printf("\nLoad average after: %s\n", machine.LoadAvg())
	return nil
}

// upload puts the model into MinIO as `aws s3 cp` would (8 MiB parts),
// which is what transfermanager's default (GET the upload's parts) sees.
func upload(ctx context.Context, m *testutil.MinIO, path string) (target, error) {
	f, err := os.Open(path)
	if err != nil {
		return target{}, err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return target{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return target{}, err
	}
	t := target{Target: variant.Target{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey,
		Bucket: "models", Key: filepath.Base(path), Size: size}, SHA256: hex.EncodeToString(h.Sum(nil))}
	if err := m.CreateBucket(ctx, t.Bucket); err != nil {
		return t, err
	}
	up := manager.NewUploader(m.Client(), func(u *manager.Uploader) { u.PartSize = 8 << 20 })
	if _, err := up.Upload(ctx, &s3.PutObjectInput{Bucket: &t.Bucket, Key: &t.Key, Body: f}); err != nil {
		return t, fmt.Errorf("upload %s: %w", path, err)
	}
	return t, nil
}

// sample is one child's phases, and what the shaper served it.
type sample struct {
	result
	shaped testutil.ShaperStats
	// CPU time used while the child ran by MinIO and by this process,
	// which serves the shaper and nothing else meanwhile.
	minioCPU, shaperCPU time.Duration
}

func runLink(ctx context.Context, m *testutil.MinIO, t target, l testutil.Link, variants []string, rounds int) (use, ready map[string]float64, err error) {
	ceiling := l.Ceiling(t.Size)
	fmt.Printf("\n## %s\n\n%s.\n", l.Name, l)
	fmt.Printf("Ceiling: %.2f s for %d bytes (first byte, then burst at the peak and the rest at the sustained rate).\n",
		ceiling.Seconds(), t.Size)
	acc, raw, err := accuracy(ctx, m, t, l)
	if err != nil {
		return nil, nil, err
	}
	fmt.Printf("Shaper accuracy: %s.\n\n", acc)

	samples := map[string][]sample{}
	for r := range rounds {
		order := slices.Clone(variants)
		for range r % len(order) {
			order = append(order[1:], order[0])
		}
		for _, v := range order {
			s, err := runOnce(v, t, l, m.Pid())
			if err != nil {
				return nil, nil, err
			}
			samples[v] = append(samples[v], s)
		}
	}
	fmt.Println("| variant | first write s | last byte s | of the ceiling | of the raw reader | link idle s | verified s | llama.cpp loaded s | model ready - last byte s | first token s | GETs (slow) | CPU-s to the last byte: client + MinIO + shaper | CPUs busy |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	use = map[string]float64{rawRow: ceiling.Seconds() / raw.Seconds()}
	ready = map[string]float64{}
	for _, v := range variants {
		ss := samples[v]
		at := func(p string) float64 {
			return variant.Median(ss, func(s sample) float64 { return s.Phases[p].Seconds() })
		}
		use[v] = variant.Median(ss, func(s sample) float64 {
			return ceiling.Seconds() / (s.Phases["last byte"] - s.Phases["client"]).Seconds()
		})
		ready[v] = variant.Median(ss, func(s sample) float64 { return (s.Phases["llama.cpp loaded"] - s.Phases["last byte"]).Seconds() })
		fmt.Printf("| %s | %.2f | %.2f | %.0f %% | %.0f %% | %.2f | %.2f | %s | %.2f | %.2f | %.0f (%.0f) | %s | %.2f of %d |\n", label(v),
			at("first write"), at("last byte"), 100*use[v], 100*use[v]*ceiling.Seconds()/raw.Seconds(),
			variant.Median(ss, func(s sample) float64 { return s.shaped.Idle.Seconds() }),
			at("verified"), loadedCell(ss, at("llama.cpp loaded")), ready[v],
			at("first token"),
			variant.Median(ss, func(s sample) float64 { return float64(s.shaped.Requests) }),
			variant.Median(ss, func(s sample) float64 { return float64(s.shaped.Slow) }),
			cpuCell(ss),
			variant.Median(ss, func(s sample) float64 {
				return (s.CPU + s.minioCPU + s.shaperCPU).Seconds() / s.Phases["last byte"].Seconds()
			}), runtime.NumCPU())
	}
	fmt.Printf("\nof the ceiling = %.2f s / (last byte - client made); of the raw reader = %.2f s (its time, above) / the same.\n", ceiling.Seconds(), raw.Seconds())
	fmt.Println("link idle: the time the link's sustained rate went unused between the first and the last byte, beyond")
	fmt.Println("the 10 ms the shaper forgives, by the shaper's count. model ready - last byte: llama.cpp loaded less last")
	fmt.Println("byte, each run's, so not the difference of the medians: how long the model trailed the download (what is")
	fmt.Println("left of the SHA-256, llama.cpp's load), the chatbot's ready_after_last_byte_ms. GETs counted by the shaper,")
	fmt.Println("HEADs included. CPU-s to the last byte: the client process's CPU time (user and system) when its last")
	fmt.Println("byte landed (its start, and an early load of llama.cpp, included), MinIO's and the shaper's")
	fmt.Println("while it ran (they are idle after its last byte); CPUs busy: their sum over the time to the last byte, of")
	fmt.Println("this machine's CPUs. A link the client does not fill with the CPUs all busy is the machine's limit.")
	return use, ready, nil
}

// cpuCell shows the median CPU time of the client, MinIO and the shaper
// up to the client's last byte.
func cpuCell(ss []sample) string {
	med := func(f func(sample) time.Duration) float64 {
		return variant.Median(ss, func(s sample) float64 { return f(s).Seconds() })
	}
	return fmt.Sprintf("%.2f + %.2f + %.2f", med(func(s sample) time.Duration { return s.CPU }),
		med(func(s sample) time.Duration { return s.minioCPU }), med(func(s sample) time.Duration { return s.shaperCPU }))
}

// loadedCell shows when llama.cpp's load ended and, if any run loaded the
// model while it downloaded, how many did.
func loadedCell(ss []sample, at float64) string {
	early := 0
	for _, s := range ss {
		if s.Early {
			early++
		}
	}
	if early == 0 {
		return fmt.Sprintf("%.2f", at)
	}
	return fmt.Sprintf("%.2f (early in %d of %d)", at, early, len(ss))
}

// accuracy measures the shaper on this link: one raw GET at the
// per-connection cap alone (2 s of transfer or the object), and the whole
// object read by 32 raw connections in 8 MiB ranges, bytes dropped, as a
// share of the ceiling: what the link gives a client that asks for all of
// it, on this machine.
func accuracy(ctx context.Context, m *testutil.MinIO, t target, l testutil.Link) (string, time.Duration, error) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	defer hc.CloseIdleConnections()
	get := func(s *testutil.Shaper, off, n int64) (int64, error) {
		c := m.Client(func(o *s3.Options) { o.BaseEndpoint, o.HTTPClient = aws.String(s.URL), hc })
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &t.Bucket, Key: &t.Key,
			Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1))})
		if err != nil {
			return 0, err
		}
		defer out.Body.Close()
		return io.Copy(io.Discard, out.Body)
	}
	var parts []string
	if l.PerConn > 0 {
		s, err := testutil.StartShaper(m.Endpoint, testutil.Link{PerConn: l.PerConn})
		if err != nil {
			return "", 0, err
		}
		n := min(t.Size, int64(2*l.PerConn))
		start := time.Now()
		got, err := get(s, 0, n)
		d := time.Since(start)
		s.Close()
		if err != nil {
			return "", 0, err
		}
		rate := float64(got) / d.Seconds()
		parts = append(parts, fmt.Sprintf("one GET at the %.0f MB/s per-connection cap read at %.1f MB/s (%.3f)", l.PerConn/1e6, rate/1e6, rate/l.PerConn))
	}
	s, err := testutil.StartShaper(m.Endpoint, l)
	if err != nil {
		return "", 0, err
	}
	defer s.Close()
	const conns, part = 32, 8 << 20
	var next int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for {
				mu.Lock()
				off := next
				next += part
				mu.Unlock()
				if off >= t.Size {
					return
				}
				if _, err := get(s, off, min(part, t.Size-off)); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	if firstErr != nil {
		return "", 0, firstErr
	}
	parts = append(parts, fmt.Sprintf("%d raw connections in 8 MiB ranges read the object in %.2f s, %.1f %% of the ceiling", conns, d.Seconds(), 100*l.Ceiling(t.Size).Seconds()/d.Seconds()))
	return strings.Join(parts, "; "), d, nil
}

// runOnce runs one variant in a new process of this program, behind a
// shaper of its own, so that no variant inherits another's spent burst.
func runOnce(row string, t target, l testutil.Link, minioPid int) (sample, error) {
	v, noRepack := strings.CutSuffix(row, noRepackSuffix)
	t.NoRepack = noRepack
	s, err := testutil.StartShaper(t.Endpoint, l)
	if err != nil {
		return sample{}, err
	}
	defer s.Close()
	t.Endpoint = s.URL
	t.StartUnixNano = time.Now().UnixNano()
	spec, _ := json.Marshal(t)
	cmd := exec.Command(os.Args[0])
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "MEMLOAD_BENCH_CHILD="+v, "MEMLOAD_BENCH_TARGET="+string(spec))
	fmt.Fprintf(os.Stderr, "%s on %s ...\n", label(row), l.Name)
	minio0, err := machine.ProcessCPU(minioPid)
	if err != nil {
		return sample{}, err
	}
	self0 := selfCPU()
	if err := cmd.Run(); err != nil {
		return sample{}, fmt.Errorf("%s on %s: %v: %s", v, l.Name, err, errOut.String())
	}
	var smp sample
	smp.shaperCPU = selfCPU() - self0
	minio1, err := machine.ProcessCPU(minioPid)
	if err != nil {
		return sample{}, err
	}
	smp.minioCPU = minio1 - minio0
	if err := json.Unmarshal(out.Bytes(), &smp.result); err != nil {
		return sample{}, fmt.Errorf("%s printed %q: %w", v, out.String(), err)
	}
	smp.shaped = s.Stats()
	return smp, nil
}
