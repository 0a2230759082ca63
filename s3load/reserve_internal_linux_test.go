package s3load

import (
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/memload/memload/memfd"
)

// TestReserveStopsAtPrefix checks that the background reservation
// reserves the memfd from its end down to the bytes in place, and not
// below: pages there may have been given back (OnRelease), and
// reserving would take them back.
func TestReserveStopsAtPrefix(t *testing.T) {
	const size = 2*reserveStep + 5<<20 // three steps, the last short
	for _, inPlace := range []int64{0, 3 << 20, reserveStep + 1<<20, size} {
		f, err := memfd.New("reserve", size, func(o *memfd.Options) { o.NoReserve = true })
		if err != nil {
			t.Fatal(err)
		}
		d := &download{}
		d.inPlace.Store(inPlace)
		r := reserveBehind(f, slog.New(slog.DiscardHandler), d.reserveDown)
		<-r.done // it ends by itself, at the prefix
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if got, want := st.Blocks*512, int64(size)-inPlace; got != want {
			t.Errorf("%d bytes in place: %d bytes reserved, want %d (from the end down to the prefix)", inPlace, got, want)
		}
		f.Close()
	}
}
