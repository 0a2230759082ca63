package testutil

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// OpenFDs returns how many file descriptors this process has open.
func OpenFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

// CheckFDs fails tb if more than before descriptors stay open. closeIdle
// (an http.Client's CloseIdleConnections, say) is called before each
// count: a transport may park a connection whose dial outlived a cancelled
// request in its idle pool a moment later, which is not a leak. The
// garbage collector runs too, for the pipes net keeps for splice(2).
func CheckFDs(tb testing.TB, before int, closeIdle ...func()) {
	tb.Helper()
	var now int
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, c := range closeIdle {
			c()
		}
		// net's splice(2) keeps pipes in a sync.Pool, closed by a
		// finalizer once the pool drops them: a cache, not a leak.
		runtime.GC()
		if now = OpenFDs(tb); now <= before || time.Now().After(deadline) {
			break
		}
	}
	if now > before {
		tb.Errorf("%d file descriptors left open (%d before, %d after): %s", now-before, before, now, describeFDs())
	}
}

// describeFDs lists what this process's descriptors refer to.
func describeFDs() string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err.Error()
	}
	var names []string
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, closed since
		}
		names = append(names, e.Name()+" -> "+target)
	}
	return strings.Join(names, ", ")
}
