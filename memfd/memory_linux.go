//go:build linux

package memfd

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Roots of the files the memory check reads; tests point them elsewhere.
var (
	procRoot   = "/proc"
	cgroupRoot = "/sys/fs/cgroup"
)

// checkMemory refuses sizes (with the headroom the process needs besides)
// larger than what the process may still take.
func checkMemory(name string, size, headroom int64) error {
	if size == 0 {
		return nil
	}
	if e := memoryError(name, size+headroom); e.Available >= 0 && size+headroom > e.Available {
		e.Headroom = headroom
		return e
	}
	return nil
}

// memoryError fills a MemoryError with what this process may use: the
// smaller of the cgroup's headroom and the machine's MemAvailable.
func memoryError(name string, size int64) *MemoryError {
	e := &MemoryError{Name: name, Requested: size, Available: -1}
	if avail, ok := memAvailable(); ok {
		e.Available = avail
	}
	if limit, used, ok := cgroupMemory(); ok {
		e.Limit = limit
		if head := max(limit-used, 0); e.Available < 0 || head < e.Available {
			e.Available = head
		}
	}
	return e
}

// memAvailable reads MemAvailable from /proc/meminfo.
func memAvailable() (int64, bool) {
	b, err := os.ReadFile(filepath.Join(procRoot, "meminfo"))
	if err != nil {
		return 0, false
	}
	v, ok := field(b, "MemAvailable:")
	return v * 1024, ok
}

// cgroupMemory returns the memory limit of this process's cgroup and its
// usage less reclaimable file cache (inactive_file), as the kubelet counts
// a working set. It reads cgroup v2 (Lambda, current distributions) and
// falls back to v1.
func cgroupMemory() (limit, used int64, ok bool) {
	v2, v1 := cgroupPaths()
	for _, dir := range candidates(cgroupRoot, v2) {
		limit, ok1 := readInt(filepath.Join(dir, "memory.max"))
		cur, ok2 := readInt(filepath.Join(dir, "memory.current"))
		if ok1 && ok2 {
			stat, _ := os.ReadFile(filepath.Join(dir, "memory.stat"))
			inactive, _ := field(stat, "inactive_file")
			return limit, max(cur-inactive, 0), true
		}
	}
	for _, dir := range candidates(filepath.Join(cgroupRoot, "memory"), v1) {
		limit, ok1 := readInt(filepath.Join(dir, "memory.limit_in_bytes"))
		cur, ok2 := readInt(filepath.Join(dir, "memory.usage_in_bytes"))
		if ok1 && ok2 && limit < 1<<62 { // v1 says "no limit" with a huge number
			stat, _ := os.ReadFile(filepath.Join(dir, "memory.stat"))
			inactive, _ := field(stat, "total_inactive_file")
			return limit, max(cur-inactive, 0), true
		}
	}
	return 0, 0, false
}

// cgroupPaths reads this process's cgroup v2 path and v1 memory path from
// /proc/self/cgroup.
func cgroupPaths() (v2, v1 string) {
	b, _ := os.ReadFile(filepath.Join(procRoot, "self", "cgroup"))
	for line := range strings.SplitSeq(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			v1 = parts[2]
		}
	}
	return v2, v1
}

// candidates lists where a cgroup's files may be: under its path, or at the
// mount root itself inside a cgroup namespace (Lambda, containers).
func candidates(root, path string) []string {
	if path == "" || path == "/" {
		return []string{root}
	}
	return []string{filepath.Join(root, path), root}
}

// readInt reads a file holding one integer; "max" (no limit) is not ok.
func readInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

// field finds "key value" in a meminfo or memory.stat listing.
func field(b []byte, key string) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == key {
			v, err := strconv.ParseInt(f[1], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}
