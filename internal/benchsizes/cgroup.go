package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// vCPUMB is the memory size at which Lambda gives a function one full
// vCPU; CPU time is proportional to memory (Lambda's "Memory and
// computing power" documentation).
const vCPUMB = 1769

// cpuPeriod is the CFS period the quota is expressed in, in microseconds.
const cpuPeriod = 100_000

// limits are the memory limit and CPU quota of a Lambda function with a
// given memory size.
type limits struct {
	MemoryMB    int
	MemoryBytes int64 // Lambda's MB are MiB: 1024 MB is 1 GiB
	CPUQuota    int64 // microseconds per cpuPeriod
}

func lambdaLimits(memoryMB int) limits {
	return limits{
		MemoryMB:    memoryMB,
		MemoryBytes: int64(memoryMB) << 20,
		CPUQuota:    (int64(cpuPeriod)*int64(memoryMB) + vCPUMB/2) / vCPUMB, // rounded
	}
}

// VCPUs is the share of CPUs the quota gives.
func (l limits) VCPUs() float64 { return float64(l.CPUQuota) / cpuPeriod }

// cgroup is a memory and CPU cgroup made for one run, under this process's
// own cgroups: one directory on cgroup v2 (Lambda, current distributions),
// one per controller on v1.
type cgroup struct {
	v2     bool
	memory string // the directory with the memory files
	cpu    string // the directory with the CPU files (v2: the same)
}

// newCgroup creates the cgroup name below root (normally /sys/fs/cgroup)
// and sets its limits. self is /proc/self/cgroup, which says where this
// process is, so the new cgroup nests under its own (and any limit of the
// parent still applies).
func newCgroup(root string, self []byte, name string, l limits) (*cgroup, error) {
	if strings.ContainsAny(name, "/.") || name == "" {
		return nil, fmt.Errorf("cgroup name %q: want a plain name", name)
	}
	paths := map[string]string{} // controller list ("" for v2) -> path
	for line := range strings.SplitSeq(string(self), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			paths[parts[1]] = parts[2]
		}
	}
	c := &cgroup{}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		// cgroup v2: one tree; the parent must hand the controllers down.
		parent := filepath.Join(root, paths[""])
		if err := enableControllers(parent, "cpu", "memory"); err != nil {
			return nil, err
		}
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup v2: %w", err)
		}
		c.v2, c.memory, c.cpu = true, dir, dir
		swap := filepath.Join(dir, "memory.swap.max")
		if _, err := os.Stat(swap); err == nil {
			if err := write(swap, "0"); err != nil { // Lambda has no swap
				c.remove()
				return nil, err
			}
		}
		if err := c.set(
			"memory.max", strconv.FormatInt(l.MemoryBytes, 10),
			"cpu.max", fmt.Sprintf("%d %d", l.CPUQuota, cpuPeriod),
		); err != nil {
			c.remove()
			return nil, err
		}
		return c, nil
	}

	// cgroup v1: a hierarchy per controller, mounted as root/<controllers>.
	for ctrls, path := range paths {
		for ctrl := range strings.SplitSeq(ctrls, ",") {
			switch ctrl {
			case "memory":
				c.memory = filepath.Join(root, ctrls, path, name)
			case "cpu":
				c.cpu = filepath.Join(root, ctrls, path, name)
			}
		}
	}
	if c.memory == "" || c.cpu == "" {
		return nil, fmt.Errorf("cgroup v1 under %s: this process is in no memory or cpu hierarchy (/proc/self/cgroup: %q)", root, self)
	}
	for _, dir := range []string{c.memory, c.cpu} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			c.remove()
			return nil, fmt.Errorf("cgroup v1: %w", err)
		}
	}
	mem := strconv.FormatInt(l.MemoryBytes, 10)
	kv := []string{"memory.limit_in_bytes", mem}
	if _, err := os.Stat(filepath.Join(c.memory, "memory.memsw.limit_in_bytes")); err == nil {
		// Memory and swap together, so that nothing is swapped out: set
		// after memory.limit_in_bytes, which it may not undercut.
		kv = append(kv, "memory.memsw.limit_in_bytes", mem)
	}
	kv = append(kv, "cpu.cfs_period_us", strconv.Itoa(cpuPeriod), "cpu.cfs_quota_us", strconv.FormatInt(l.CPUQuota, 10))
	if err := c.set(kv...); err != nil {
		c.remove()
		return nil, err
	}
	return c, nil
}

// enableControllers makes parent's children get the controllers (v2).
func enableControllers(parent string, ctrls ...string) error {
	have, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	var add []string
	for _, c := range ctrls {
		if !bytes.Contains(have, []byte(c)) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := write(filepath.Join(parent, "cgroup.subtree_control"), strings.Join(add, " ")); err != nil {
		return fmt.Errorf("%w (a cgroup v2 parent that holds processes cannot delegate controllers: run the benchmark from a cgroup of its own, e.g. systemd-run --scope)", err)
	}
	return nil
}

// set writes name, value pairs into the files of the controller each name
// belongs to.
func (c *cgroup) set(kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		dir := c.memory
		if strings.HasPrefix(kv[i], "cpu.") {
			dir = c.cpu
		}
		if err := write(filepath.Join(dir, kv[i]), kv[i+1]); err != nil {
			return err
		}
	}
	return nil
}

func write(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("cgroup: writing %q to %s: %w", value, path, err)
	}
	return nil
}

// procs are the files a process writes its pid into to join the cgroup.
func (c *cgroup) procs() []string {
	if c.v2 {
		return []string{filepath.Join(c.memory, "cgroup.procs")}
	}
	return []string{filepath.Join(c.memory, "cgroup.procs"), filepath.Join(c.cpu, "cgroup.procs")}
}

// peak is the highest memory use the cgroup has seen, in bytes.
func (c *cgroup) peak() (int64, error) {
	name := "memory.max_usage_in_bytes"
	if c.v2 {
		name = "memory.peak" // Linux 5.19 and later
	}
	b, err := os.ReadFile(filepath.Join(c.memory, name))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// oomKills counts the processes the kernel killed for the cgroup's limit.
func (c *cgroup) oomKills() (int64, error) {
	name := "memory.oom_control"
	if c.v2 {
		name = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(c.memory, name))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no oom_kill count", filepath.Join(c.memory, name))
}

// remove deletes the cgroup's directories; its processes must have ended.
func (c *cgroup) remove() error {
	var errs []error
	for _, dir := range []string{c.memory, c.cpu} {
		if dir == "" {
			continue
		}
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		if c.v2 {
			break
		}
	}
	return errors.Join(errs...)
}

// joinAndExec is the child side of a run: it moves this process into the
// cgroup (writing its pid into each procs file) and replaces itself with
// the command, so that the command starts inside the limits.
func joinAndExec(procs []string, argv []string) error {
	pid := strconv.Itoa(os.Getpid())
	for _, p := range procs {
		if err := write(p, pid); err != nil {
			return err
		}
	}
	return execve(argv)
}
