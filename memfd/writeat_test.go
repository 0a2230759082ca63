//go:build linux

package memfd_test

import (
	"bytes"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/memload/memload/memfd"
)

// fillConcurrently writes size bytes from writers goroutines, each its
// own contiguous share, chunk bytes a call, taking the bytes at offset off
// from chunkAt(off).
func fillConcurrently(t testing.TB, size, chunk int64, writers int, chunkAt func(w int, off, n int64) []byte, writeAt func([]byte, int64) (int, error)) {
	t.Helper()
	share := size / int64(writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		start, end := int64(w)*share, int64(w+1)*share
		if w == writers-1 {
			end = size
		}
		wg.Go(func() {
			for off := start; off < end; off += chunk {
				if _, err := writeAt(chunkAt(w, off, min(chunk, end-off)), off); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestConcurrentWriteAt(t *testing.T) {
	const size = 8<<20 + 123
	f := newFile(t, size)
	src := pattern(size)
	fillConcurrently(t, size, 64<<10+1, 8, func(_ int, off, n int64) []byte { return src[off : off+n] }, f.WriteAt)
	got := make([]byte, size)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pattern(size)) {
		t.Fatal("bytes written from 8 goroutines differ from the source")
	}
}

// BenchmarkWriteAt fills 256 MiB from 8 goroutines in 1 MiB writes, as a
// download does, through File.WriteAt (which takes turns) and through
// bare pwrite calls on the same kind of file, and reports the process's
// CPU time per GiB written (rusage, user+sys): compare the two.
func BenchmarkWriteAt(b *testing.B) {
	const size, chunk, writers = 256 << 20, 1 << 20, 8
	for _, bc := range []struct {
		name  string
		write func(f *memfd.File) func([]byte, int64) (int, error)
	}{
		{"File.WriteAt", func(f *memfd.File) func([]byte, int64) (int, error) { return f.WriteAt }},
		{"pwrite", func(f *memfd.File) func([]byte, int64) (int, error) {
			return func(p []byte, off int64) (int, error) { return unix.Pwrite(int(f.Fd()), p, off) }
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(size)
			bufs := make([][]byte, writers) // one per writer, as a download's
			for i := range bufs {
				bufs[i] = pattern(chunk)
			}
			chunkAt := func(w int, _, n int64) []byte { return bufs[w][:n] }
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				f, err := memfd.New("bench", size)
				if err != nil {
					b.Fatal(err)
				}
				before := cpuTime(b)
				b.StartTimer()
				fillConcurrently(b, size, chunk, writers, chunkAt, bc.write(f))
				b.StopTimer()
				cpu += cpuTime(b) - before
				f.Close()
				b.StartTimer()
			}
			b.ReportMetric(cpu.Seconds()/float64(b.N)*(1<<30)/size, "cpu-s/GiB")
		})
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
