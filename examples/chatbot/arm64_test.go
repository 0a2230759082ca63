package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/memload/memload/internal/testutil/lambdart"
)

// Debian's arm64 pieces TestGraviton runs the zip with on amd64 (make
// graviton installs them): qemu-user-static, and the glibc and libgcc of
// libc6:arm64, which libffi8:arm64 pulls in, as Lambda's provided.al2023
// provides them.
const (
	qemuAarch64 = "/usr/bin/qemu-aarch64-static"
	arm64Loader = "/lib/ld-linux-aarch64.so.1"
)

// graviton returns an executable that runs the arm64 zip's bootstrap in
// task: on an arm64 machine the bootstrap itself, elsewhere a script that
// runs it under qemu-user. The script lives outside task, so the function
// sees the zip's files and nothing else.
func graviton(t *testing.T, task string) string {
	t.Helper()
	bin := filepath.Join(task, "bootstrap")
	if runtime.GOARCH == "arm64" {
		return bin
	}
	// -L /: the multiarch glibc of libc6:arm64, whole. The cross
	// toolchain's sysroot (-L /usr/aarch64-linux-gnu) would pair its ld.so
	// with the libc.so.6 that /etc/ld.so.cache lists, libc6:arm64's, a
	// different build; the process then hangs before its first thread.
	// QEMU_CPU: Neoverse N1, the core of Graviton2 that Lambda's arm64
	// functions run on, so llama.cpp picks the CPU variant it would there.
	script := fmt.Sprintf("#!/bin/sh\ncd %q && QEMU_CPU=neoverse-n1 exec %s -L / %q \"$@\"\n", task, qemuAarch64, bin)
	p := filepath.Join(t.TempDir(), "bootstrap")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGraviton runs `make zip ARCH=arm64`'s zip (its bootstrap and lib/)
// under lambdart as an arm64 function: on amd64 through qemu-user, which
// emulates the instructions and passes the system calls to this kernel.
// It loads the tiny model from MinIO and streams a greedy answer, which
// must be the one the amd64 zip gives. Emulated, it is slow: the function
// is provisioned (its init may take the function's timeout) and the
// timeout is generous; no time is asserted.
func TestGraviton(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and emulates the arm64 Lambda bootstrap; not with -short")
	}
	if runtime.GOARCH != "arm64" {
		for _, p := range []string{qemuAarch64, arm64Loader, "/usr/lib/aarch64-linux-gnu/libffi.so.8"} {
			if !fileExists(p) {
				t.Skipf("%s is missing: the arm64 zip runs with Debian's qemu-user-static and libffi8:arm64 "+
					"(make graviton installs them on Debian; make test runs it)", p)
			}
		}
	}
	task, err := lambdaTasks["arm64"]()
	if err != nil {
		t.Fatal(err)
	}
	env := minioModel(t)
	env["MAX_TOKENS"] = "16"
	// lambdart runs the script as the bootstrap; the function's task is
	// the zip's directory.
	fenv := maps.Clone(env)
	fenv["LAMBDA_TASK_ROOT"] = task
	fenv["LD_LIBRARY_PATH"] = "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:" + task + ":" + task + "/lib:/opt/lib"
	f := startFunction(t, graviton(t, task), func(o *lambdart.Options) {
		o.Env, o.MemoryMB, o.Timeout, o.Provisioned = fenv, 2048, 10*time.Minute, true
	})
	h := health(t, f)
	if h.Status != "ready" || h.ColdStart == nil || !h.ColdStart.LoadedInit || !strings.Contains(h.ColdStart.Verified, "SHA-256") {
		t.Fatalf("healthz %+v, cold start %+v: want a verified load within init", h, h.ColdStart)
	}
	t.Logf("cold start under emulation: %+v", *h.ColdStart)
	if runtime.GOARCH != "arm64" && !strings.Contains(f.Output(), `"cpu":"armv8.2_`) {
		t.Errorf("llama.cpp did not load an Armv8.2 CPU variant, Neoverse N1's")
	}

	const tokens = 16
	text, last, reads, _ := streamedAnswer(t, f.URL(), tokens)
	if last.Timings == nil || last.Timings.PredictedN != tokens || *last.Choices[0].FinishReason != "length" {
		t.Fatalf("final chunk %+v: want %d tokens, cut at the length", last, tokens)
	}
	distinct := map[int]bool{}
	for _, r := range reads {
		distinct[r] = true
	}
	if len(distinct) < 2 {
		t.Errorf("%d content events in %d reads: want the answer streamed", len(reads), len(distinct))
	}
	t.Logf("arm64 answer %q: %d content events in %d reads", text, len(reads), len(distinct))

	// The amd64 zip, natively: the same greedy answer. The kernels (NEON
	// there, AVX here) sum in other orders, but with F32 weights the
	// rounding is far below the gaps between this model's top logits.
	if runtime.GOARCH != "arm64" {
		p := start(t, env, bootstrap(t), "-addr", "127.0.0.1:0")
		native, _, _, _ := streamedAnswer(t, waitServing(t, p), tokens)
		if native != text {
			t.Errorf("arm64 answer %q\namd64 answer %q", text, native)
		}
	}
}
