package idle

import (
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGo checks that f runs on a thread of nice 19, the same for every
// call, in the order of the calls, while the caller's thread keeps its
// priority.
func TestGo(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("thread priorities are set on Linux only")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	Go(func() {
		// getpriority returns 20 - nice for PRIO_PROCESS through the raw syscall.
		p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
		if err != nil {
			t.Error(err)
		}
		got <- p
	})
	if p := <-got; 20-p != 19 {
		t.Errorf("f ran at nice %d, want 19", 20-p)
	}
	var order []int
	done := make(chan struct{})
	for i := range 3 {
		Go(func() { order = append(order, i); got <- unix.Gettid() })
	}
	Go(func() { close(done) })
	a, b, c := <-got, <-got, <-got
	<-done
	if a != b || b != c {
		t.Errorf("functions ran on threads %d, %d and %d, want the one idle thread", a, b, c)
	}
	if !slices.Equal(order, []int{0, 1, 2}) {
		t.Errorf("functions ran in the order %v, want the order given", order)
	}
	after, _ := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if after != before {
		t.Errorf("the caller's thread moved from %d to %d", before, after)
	}
}
