package machine

import (
	"os"
	"testing"
	"time"
)

// TestProcessCPU checks that this process's CPU time, read from /proc,
// grows while it computes, and that a process that does not exist is an
// error.
func TestProcessCPU(t *testing.T) {
	before, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := uint64(1)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		for range 1 << 20 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		now, err := ProcessCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if now > before {
			return
		}
	}
	t.Errorf("CPU time stayed at %v through 10 s of computing (%d)", before, x)
}

func TestProcessCPUNoProcess(t *testing.T) {
	if _, err := ProcessCPU(1 << 30); err == nil {
		t.Error("ProcessCPU of a pid beyond pid_max succeeded, want an error")
	}
}
