package testutil

import (
	"os"
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
// request in its idle pool a moment later, which is not a leak.
func CheckFDs(tb testing.TB, before int, closeIdle ...func()) {
	tb.Helper()
	var now int
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, c := range closeIdle {
			c()
		}
		if now = OpenFDs(tb); now <= before || time.Now().After(deadline) {
			break
		}
	}
	if now > before {
		tb.Errorf("%d file descriptors left open (%d before, %d after)", now-before, before, now)
	}
}
