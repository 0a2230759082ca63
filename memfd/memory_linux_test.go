package memfd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The cgroup files cannot be changed on a test machine, so these tests lay
// out copies of them as Lambda (v2) and older hosts (v1) show them.
func TestCgroupMemory(t *testing.T) {
	tests := []struct {
		name              string
		files             map[string]string
		limit, used       int64
		ok                bool
		available, avail2 int64
	}{
		{
			name: "v2 namespace root, as on Lambda",
			files: map[string]string{
				"proc/self/cgroup":  "0::/\n",
				"cg/memory.max":     "2147483648\n",
				"cg/memory.current": "536870912\n",
				"cg/memory.stat":    "anon 1\ninactive_file 134217728\nactive_file 5\n",
				"proc/meminfo":      "MemTotal: 100 kB\nMemAvailable: 8388608 kB\n",
			},
			limit: 2 << 30, used: 512<<20 - 128<<20, ok: true,
			available: 2<<30 - (512<<20 - 128<<20),
		},
		{
			name: "v2 nested path, no limit",
			files: map[string]string{
				"proc/self/cgroup":                             "0::/user.slice/session-1.scope\n",
				"cg/user.slice/session-1.scope/memory.max":     "max\n",
				"cg/user.slice/session-1.scope/memory.current": "4096\n",
				"proc/meminfo":                                 "MemAvailable: 1024 kB\n",
			},
			available: 1 << 20,
		},
		{
			name: "v1 hybrid with a limit",
			files: map[string]string{
				"proc/self/cgroup":                    "4:memory:/job\n0::/\n",
				"cg/memory/job/memory.limit_in_bytes": "1073741824\n",
				"cg/memory/job/memory.usage_in_bytes": "1073741824\n",
				"cg/memory/job/memory.stat":           "total_inactive_file 1048576\n",
				"proc/meminfo":                        "MemAvailable: 8388608 kB\n",
			},
			limit: 1 << 30, used: 1<<30 - 1<<20, ok: true, available: 1 << 20,
		},
		{
			name: "v1 unlimited",
			files: map[string]string{
				"proc/self/cgroup":                "4:memory:/\n",
				"cg/memory/memory.limit_in_bytes": "9223372036854771712\n",
				"cg/memory/memory.usage_in_bytes": "1\n",
				"proc/meminfo":                    "MemAvailable: 2 kB\n",
			},
			available: 2048,
		},
		{
			name:      "nothing readable",
			files:     map[string]string{},
			available: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for name, body := range tt.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			oldProc, oldCg := procRoot, cgroupRoot
			procRoot, cgroupRoot = filepath.Join(root, "proc"), filepath.Join(root, "cg")
			t.Cleanup(func() { procRoot, cgroupRoot = oldProc, oldCg })

			limit, used, ok := cgroupMemory()
			if limit != tt.limit || used != tt.used || ok != tt.ok {
				t.Errorf("cgroupMemory() = %d, %d, %v; want %d, %d, %v", limit, used, ok, tt.limit, tt.used, tt.ok)
			}
			e := memoryError("m", 1)
			if e.Available != tt.available {
				t.Errorf("Available = %d, want %d", e.Available, tt.available)
			}
			if tt.available >= 0 {
				if err := checkMemory("m", tt.available+1, 0); err == nil {
					t.Errorf("checkMemory(%d) accepted a size above what is available", tt.available+1)
				}
				if err := checkMemory("m", tt.available, 0); err != nil {
					t.Errorf("checkMemory(%d) refused what is available: %v", tt.available, err)
				}
				// The headroom counts: what fits alone does not fit with it.
				if tt.available > 1 {
					err := checkMemory("m", tt.available-1, 2)
					var me *MemoryError
					if !errors.As(err, &me) || me.Headroom != 2 || me.Requested != tt.available+1 || !strings.Contains(err.Error(), "besides") {
						t.Errorf("checkMemory(%d, headroom 2) = %v, want a refusal naming the headroom", tt.available-1, err)
					}
					if err := checkMemory("m", tt.available-2, 2); err != nil {
						t.Errorf("checkMemory(%d, headroom 2) refused what is available: %v", tt.available-2, err)
					}
				}
			}
		})
	}
}
