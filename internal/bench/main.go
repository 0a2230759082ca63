// Command bench measures memload against the AWS SDK's downloaders, each
// loading the same object from a local MinIO into a memfd, each variant in
// a process of its own so that its CPU time and peak RSS (from rusage) are
// its alone. It starts MinIO over plain HTTP and over TLS, uploads the
// object once per server, checks every variant's SHA-256 once, then runs
// the variants in alternating order for several rounds and prints medians
// as Markdown tables, with ratios to memload.
//
//	go run ./internal/bench [-size 1024] [-rounds 5] [-variants memload,manager,...]
//
// Variants: memload (defaults), memload:seed (100 MiB parts, NumCPU
// workers), memload:P:C (P MiB parts, C workers), memload:noreserve, manager (SDK
// feature/s3/manager defaults), manager:P:C, transfermanager (defaults).
// floor fills a memfd from memory (floor:noreserve without fallocate,
// floor:map through a mapping): the cost no downloader avoids. net runs
// memload's download and drops the bytes: the network path's cost alone.
// The peers write into a memfd made with memfd_create and ftruncate, as
// their users would; memload into its own (package memfd).
// -coldstart times one memload start to finish, phase by phase.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/memload/memload/internal/bench/variant"
	"github.com/memload/memload/internal/machine"
	"github.com/memload/memload/internal/testutil"
)

const defaultVariants = "memload,memload:seed,manager,manager:16:16,transfermanager,floor"

func main() {
	if variant := os.Getenv("MEMLOAD_BENCH_CHILD"); variant != "" {
		var t target
		if err := json.Unmarshal([]byte(os.Getenv("MEMLOAD_BENCH_TARGET")), &t); err != nil {
			fail(err)
		}
		if err := runChild(variant, t); err != nil {
			fail(fmt.Errorf("%s: %w", variant, err))
		}
		return
	}
	sizeMiB := flag.Int64("size", 1024, "object size in MiB")
	rounds := flag.Int("rounds", 5, "rounds of every variant (at least 3 for medians)")
	variants := flag.String("variants", defaultVariants, "comma-separated variants, memload first: it is the reference")
	protos := flag.String("proto", "http,https", "comma-separated: http, https (MinIO with a self-signed certificate)")
	coldstart := flag.Int("coldstart", 3, "cold-start runs of memload over https (0: skip)")
	serve := flag.Bool("serve", false, "only start MinIO (the first -proto), upload the object, print how to reach it, and wait for ^C: for profiling by hand")
	flag.Parse()
	if *serve {
		if err := serveOnly(*sizeMiB<<20, strings.Split(*protos, ",")[0]); err != nil {
			fail(err)
		}
		return
	}
	if err := run(*sizeMiB<<20, *rounds, strings.Split(*variants, ","), strings.Split(*protos, ","), *coldstart); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// sample is one child process's measurements.
type sample struct {
	cpu, user, sys time.Duration
	maxRSS         int64 // bytes, VmHWM
	load           time.Duration
	result         result
}

func run(size int64, rounds int, variants, protos []string, coldstart int) error {
	fmt.Printf("# memload S3 download benchmark, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("Machine: %s. Object: %d MiB. Rounds: %d.\n", machine.Describe(), size>>20, rounds)
	fmt.Printf("Command: go run ./internal/bench %s\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("Load average before: %s\n", machine.LoadAvg())
	for _, proto := range protos {
		if err := runProto(proto, size, rounds, variants, coldstart); err != nil {
			return err
		}
	}
	return nil
}

// startServer starts MinIO for proto and uploads the object.
func startServer(proto string, size int64) (m *testutil.MinIO, t target, sha string, err error) {
	ctx := context.Background()
	switch proto {
	case "http":
		m, err = testutil.StartMinIO(ctx)
	case "https":
		m, err = testutil.StartMinIOTLS(ctx)
	default:
		err = fmt.Errorf("unknown protocol %q", proto)
	}
	if err != nil {
		return nil, t, "", err
	}
	t = target{Target: variant.Target{Endpoint: m.Endpoint, CertFile: m.CertFile(), AccessKey: m.AccessKey, SecretKey: m.SecretKey,
		Bucket: "bench", Key: "model.gguf", Size: size}}
	if err = m.CreateBucket(ctx, t.Bucket); err == nil {
		sha, err = m.PutRandom(ctx, t.Bucket, t.Key, size, 42)
	}
	if err != nil {
		m.Stop()
		return nil, t, "", err
	}
	return m, t, sha, nil
}

func serveOnly(size int64, proto string) error {
	m, t, sha, err := startServer(proto, size)
	if err != nil {
		return err
	}
	defer m.Stop()
	spec, _ := json.Marshal(t)
	fmt.Printf("s3://%s/%s (sha256 %s) at %s\n", t.Bucket, t.Key, sha, t.Endpoint)
	fmt.Printf("run a variant: MEMLOAD_BENCH_CHILD=memload MEMLOAD_BENCH_TARGET='%s' %s\n", spec, os.Args[0])
	fmt.Printf("or: AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_REGION=us-east-1 go run ./examples/memload -endpoint %s s3://%s/%s\n",
		t.AccessKey, t.SecretKey, t.Endpoint, t.Bucket, t.Key)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return nil
}

func runProto(proto string, size int64, rounds int, variants []string, coldstart int) error {
	m, t, want, err := startServer(proto, size)
	if err != nil {
		return err
	}
	defer m.Stop()

	// Once per variant, untimed: the bytes are right (and MinIO is warm).
	for _, v := range variants {
		if strings.HasPrefix(v, "floor") || v == "net" {
			continue // no bytes to check
		}
		vt := t
		vt.Verify = true
		s, err := runOnce(v, vt)
		if err != nil {
			return err
		}
		if s.result.SHA256 != want {
			return fmt.Errorf("%s over %s loaded bytes with SHA-256 %s, want %s", v, proto, s.result.SHA256, want)
		}
	}
	base, err := runOnce("none", t)
	if err != nil {
		return err
	}

	samples := map[string][]sample{}
	for r := range rounds {
		order := slices.Clone(variants)
		for range r % len(order) { // rotate, so no variant always follows the same one
			order = append(order[1:], order[0])
		}
		for _, v := range order {
			s, err := runOnce(v, t)
			if err != nil {
				return err
			}
			samples[v] = append(samples[v], s)
		}
	}
	gib := float64(size) / (1 << 30)
	fmt.Printf("## %s (%d rounds, medians; SHA-256 verified once per variant)\n\n", strings.ToUpper(proto), rounds)
	fmt.Println("| variant | CPU s/GiB | × memload | user s | sys s | wall s | GiB/s | max RSS MiB | extra RSS MiB |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	ref := median(samples[variants[0]], func(s sample) float64 { return s.cpu.Seconds() })
	for _, v := range variants {
		ss := samples[v]
		c := median(ss, func(s sample) float64 { return s.cpu.Seconds() })
		wall := median(ss, func(s sample) float64 { return s.load.Seconds() })
		rss := median(ss, func(s sample) float64 { return float64(s.maxRSS) / (1 << 20) })
		fmt.Printf("| %s | %.3f | %.2f | %.3f | %.3f | %.3f | %.2f | %.0f | %.0f |\n", variant.Label(v), c/gib, c/ref,
			median(ss, func(s sample) float64 { return s.user.Seconds() }),
			median(ss, func(s sample) float64 { return s.sys.Seconds() }),
			wall, gib/wall, rss, rss-float64(base.maxRSS)/(1<<20))
	}
	// The goal compares memload with the peers as their users run them,
	// writing into a memfd of their own; the +memfd rows are the peers
	// writing through memload's memfd package, shown for what it alone is
	// worth.
	for _, ours := range []bool{false, true} {
		var best string
		for _, v := range variants {
			if (strings.HasPrefix(v, "manager") || strings.HasPrefix(v, "transfermanager")) && strings.Contains(v, "+memfd") == ours {
				if best == "" || cpuOf(samples[v]) < cpuOf(samples[best]) {
					best = v
				}
			}
		}
		if best == "" || variants[0] != "memload" {
			continue
		}
		cpuGoal, wallGoal := " (goal ≤ 0.75)", " (goal ≤ 1.00)"
		if ours {
			cpuGoal, wallGoal = "", ""
		}
		fmt.Printf("\nmemload / best Go peer (%s): CPU %.2f%s, wall %.2f%s.\n", variant.Label(best),
			ref/cpuOf(samples[best]), cpuGoal, median(samples["memload"], loadOf)/median(samples[best], loadOf), wallGoal)
	}
	fmt.Printf("\nProcess baseline (start, make the client, exit): %.3f CPU-s, %.0f MiB max RSS; included above, subtracted for \"extra RSS\".\n\n",
		base.cpu.Seconds(), float64(base.maxRSS)/(1<<20))

	if proto == "https" && coldstart > 0 {
		return runColdStart(t, want, coldstart, size)
	}
	return nil
}

// runColdStart times memload from process start to a sealed memfd, a
// SHA-256 after it, and a load that verifies an expected SHA-256 itself
// (Options.SHA256, hashed part by part during the download).
func runColdStart(t target, sum string, runs int, size int64) error {
	phases := []string{"main", "client", "first response", "first write", "last byte", "sealed", "sha256"}
	about := map[string]string{
		"main":           "exec, Go runtime start",
		"client":         "S3 client made",
		"first response": "first ranged GET answered (TCP + TLS handshake, request)",
		"first write":    "memfd created and reserved, first MiB written",
		"last byte":      "all parts in the memfd",
		"sealed":         "Load returned: memfd sealed",
		"sha256":         "optional: SHA-256 of the mapped memfd",
	}
	var all []sample
	for range runs {
		s, err := runOnce("coldstart", t)
		if err != nil {
			return err
		}
		all = append(all, s)
	}
	ts := t
	ts.SHA256 = sum
	var verified []sample
	for range runs {
		s, err := runOnce("coldstart", ts)
		if err != nil {
			return err
		}
		verified = append(verified, s)
	}
	fmt.Printf("## Cold start over HTTPS, %d MiB (median of %d)\n\n", size>>20, runs)
	fmt.Println("| phase | since process start ms | phase ms | what |")
	fmt.Println("| --- | ---: | ---: | --- |")
	prev := 0.0
	for _, p := range phases {
		at := median(all, func(s sample) float64 { return float64(s.result.Phases[p].Microseconds()) / 1000 })
		fmt.Printf("| %s | %.0f | %.0f | %s |\n", p, at, at-prev, about[p])
		prev = at
	}
	at := median(verified, func(s sample) float64 { return float64(s.result.Phases["sealed"].Microseconds()) / 1000 })
	fmt.Printf("| sealed, with Options.SHA256 | %.0f | | instead: Load verified the SHA-256 itself, hashing each part as it landed |\n", at)
	fmt.Println()
	return nil
}

// runOnce runs one variant in a new process of this program.
func runOnce(variant string, t target) (sample, error) {
	cmd := exec.Command(os.Args[0])
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	t.StartUnixNano = time.Now().UnixNano()
	spec, _ := json.Marshal(t)
	cmd.Env = append(os.Environ(), "MEMLOAD_BENCH_CHILD="+variant, "MEMLOAD_BENCH_TARGET="+string(spec))
	if err := cmd.Run(); err != nil {
		return sample{}, fmt.Errorf("%s: %v: %s", variant, err, errOut.String())
	}
	var s sample
	if err := json.Unmarshal(out.Bytes(), &s.result); err != nil {
		return sample{}, fmt.Errorf("%s printed %q: %w", variant, out.String(), err)
	}
	// The child's own rusage when the object was in place: the process's
	// final rusage would add freeing the memfd at exit (about 0.13 s per
	// GiB), which is no downloader's work.
	s.user, s.sys = s.result.User, s.result.Sys
	s.cpu = s.user + s.sys
	s.load, s.maxRSS = s.result.Load, s.result.HWM
	return s, nil
}

func cpuOf(ss []sample) float64 { return median(ss, func(s sample) float64 { return s.cpu.Seconds() }) }

func loadOf(s sample) float64 { return s.load.Seconds() }

func median(ss []sample, f func(sample) float64) float64 { return variant.Median(ss, f) }
