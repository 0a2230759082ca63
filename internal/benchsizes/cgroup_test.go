package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLambdaLimits(t *testing.T) {
	for _, c := range []struct {
		mb    int
		quota int64
		bytes int64
	}{
		{1769, 100_000, 1769 << 20},   // one vCPU
		{3538, 200_000, 3538 << 20},   // two
		{1024, 57_886, 1 << 30},       // 1024/1769 of one
		{10240, 578_858, 10240 << 20}, // Lambda's largest: about 5.8 (Lambda rounds up to 6 vCPUs)
		{128, 7_236, 128 << 20},       // Lambda's smallest
	} {
		l := lambdaLimits(c.mb)
		if l.CPUQuota != c.quota || l.MemoryBytes != c.bytes {
			t.Errorf("%d MB: quota %d, memory %d; want %d, %d", c.mb, l.CPUQuota, l.MemoryBytes, c.quota, c.bytes)
		}
	}
}

// fakeRoot lays out a cgroup mount the way the kernel shows it, as far as
// newCgroup reads it.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCgroupV1 checks the files written on a v1 mount such as this
// machine's: memory and cpu in hierarchies of their own (cpu co-mounted
// with cpuacct, as many distributions do), the new group nested under the
// process's own.
func TestCgroupV1(t *testing.T) {
	root := fakeRoot(t, map[string]string{
		"memory/sandbox/memory.limit_in_bytes": "9223372036854771712\n",
		"cpu,cpuacct/cpu.cfs_period_us":        "100000\n",
	})
	self := []byte("12:cpu,cpuacct:/\n4:memory:/sandbox\n1:name=systemd:/\n0::/\n")
	c, err := newCgroup(root, self, "lambda-2048", lambdaLimits(2048))
	if err != nil {
		t.Fatal(err)
	}
	mem, cpu := filepath.Join(root, "memory/sandbox/lambda-2048"), filepath.Join(root, "cpu,cpuacct/lambda-2048")
	if c.v2 || c.memory != mem || c.cpu != cpu {
		t.Fatalf("cgroup %+v, want memory %s, cpu %s", c, mem, cpu)
	}
	for path, want := range map[string]string{
		filepath.Join(mem, "memory.limit_in_bytes"): "2147483648",
		filepath.Join(cpu, "cpu.cfs_period_us"):     "100000",
		filepath.Join(cpu, "cpu.cfs_quota_us"):      "115772",
	} {
		if got := readFile(t, path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if got := c.procs(); len(got) != 2 || got[0] != filepath.Join(mem, "cgroup.procs") || got[1] != filepath.Join(cpu, "cgroup.procs") {
		t.Errorf("procs %v", got)
	}

	// The kernel's counters, as v1 shows them.
	os.WriteFile(filepath.Join(mem, "memory.max_usage_in_bytes"), []byte("1234567\n"), 0o644)
	os.WriteFile(filepath.Join(mem, "memory.oom_control"), []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), 0o644)
	if p, err := c.peak(); p != 1234567 || err != nil {
		t.Errorf("peak %d, %v", p, err)
	}
	if n, err := c.oomKills(); n != 3 || err != nil {
		t.Errorf("oom kills %d, %v", n, err)
	}
	for _, f := range []string{"memory.limit_in_bytes", "memory.max_usage_in_bytes", "memory.oom_control"} {
		os.Remove(filepath.Join(mem, f))
	}
	for _, f := range []string{"cpu.cfs_period_us", "cpu.cfs_quota_us"} {
		os.Remove(filepath.Join(cpu, f))
	}
	if err := c.remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mem); !os.IsNotExist(err) {
		t.Errorf("%s still there", mem)
	}
}

// TestCgroupErrors checks that what cannot work is refused with the reason.
func TestCgroupErrors(t *testing.T) {
	root := fakeRoot(t, map[string]string{"memory/x": "", "cpu/x": ""})
	// The process's cgroup is a file here: mkdir fails.
	if _, err := newCgroup(root, []byte("4:memory:/x\n1:cpu:/x\n"), "g", lambdaLimits(1024)); err == nil {
		t.Fatal("newCgroup under a file: want an error")
	}
	root = fakeRoot(t, map[string]string{"memory/a/memory.limit_in_bytes": "", "cpu/cpu.shares": ""})
	if _, err := newCgroup(root, []byte("4:memory:/a\n1:cpu:/\n"), "../escape", lambdaLimits(1024)); err == nil || !strings.Contains(err.Error(), "plain name") {
		t.Errorf("a name with a path: %v", err)
	}
	if _, err := newCgroup(root, []byte("4:memory:/a\n"), "g", lambdaLimits(1024)); err == nil || !strings.Contains(err.Error(), "no memory or cpu hierarchy") {
		t.Errorf("no cpu hierarchy: %v", err)
	}
}

// TestCgroupV2 checks the files written on a v2 mount (Lambda's): the
// controllers handed down by the parent, memory.max, no swap, cpu.max.
func TestCgroupV2(t *testing.T) {
	root := fakeRoot(t, map[string]string{
		"cgroup.controllers":                      "cpuset cpu io memory pids\n",
		"user.slice/bench/cgroup.controllers":     "cpu memory pids\n",
		"user.slice/bench/cgroup.subtree_control": "pids\n",
	})
	c, err := newCgroup(root, []byte("0::/user.slice/bench\n"), "lambda-1769", lambdaLimits(1769))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "user.slice/bench/lambda-1769")
	if !c.v2 || c.memory != dir || c.cpu != dir {
		t.Fatalf("cgroup %+v, want v2 in %s", c, dir)
	}
	for path, want := range map[string]string{
		filepath.Join(root, "user.slice/bench/cgroup.subtree_control"): "+cpu +memory",
		filepath.Join(dir, "memory.max"):                               "1854930944",
		filepath.Join(dir, "cpu.max"):                                  "100000 100000",
	} {
		if got := readFile(t, path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if got := c.procs(); len(got) != 1 || got[0] != filepath.Join(dir, "cgroup.procs") {
		t.Errorf("procs %v", got)
	}
	os.WriteFile(filepath.Join(dir, "memory.peak"), []byte("7654321\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "memory.events"), []byte("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n"), 0o644)
	if p, err := c.peak(); p != 7654321 || err != nil {
		t.Errorf("peak %d, %v", p, err)
	}
	if n, err := c.oomKills(); n != 1 || err != nil {
		t.Errorf("oom kills %d, %v", n, err)
	}

	// Controllers already handed down are not written again.
	root = fakeRoot(t, map[string]string{
		"cgroup.controllers":     "cpu memory\n",
		"cgroup.subtree_control": "cpu memory\n",
	})
	if _, err := newCgroup(root, []byte("0::/\n"), "g", lambdaLimits(1024)); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "cgroup.subtree_control")); got != "cpu memory\n" {
		t.Errorf("subtree_control rewritten: %q", got)
	}
	if got := readFile(t, filepath.Join(root, "g", "cpu.max")); got != "57886 100000" {
		t.Errorf("cpu.max %q", got)
	}
}
