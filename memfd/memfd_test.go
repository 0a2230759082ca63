//go:build linux

package memfd_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/memfd"
)

func newFile(t *testing.T, size int64, optFns ...func(*memfd.Options)) *memfd.File {
	t.Helper()
	f, err := memfd.New(t.Name(), size, optFns...)
	if err != nil {
		t.Fatalf("New(%d): %v", size, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func TestWriteReadThroughPath(t *testing.T) {
	for _, size := range []int{0, 1, 4096, 3<<20 + 17} {
		want := pattern(size)
		f := newFile(t, int64(size))
		// Write in two halves, back to front, as concurrent parts would.
		half := size / 2
		if _, err := f.WriteAt(want[half:], int64(half)); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(want[:half], 0); err != nil {
			t.Fatal(err)
		}
		if f.Size() != int64(size) {
			t.Errorf("Size() = %d, want %d", f.Size(), size)
		}
		if !strings.HasPrefix(f.Path(), "/proc/self/fd/") {
			t.Errorf("Path() = %q", f.Path())
		}
		got, err := os.ReadFile(f.Path())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("size %d: bytes read through %s differ from those written", size, f.Path())
		}
		back := make([]byte, size)
		if _, err := f.ReadAt(back, 0); err != nil && size > 0 {
			t.Fatal(err)
		}
		if !bytes.Equal(back, want) {
			t.Errorf("size %d: ReadAt differs from what was written", size)
		}
	}
}

func TestReserve(t *testing.T) {
	const size = 8 << 20
	blocks := func(f *memfd.File) int64 {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	if got := blocks(newFile(t, size)); got < size {
		t.Errorf("reserved file holds %d bytes of pages, want %d", got, size)
	}
	sparse := newFile(t, size, func(o *memfd.Options) { o.NoReserve = true })
	if got := blocks(sparse); got != 0 {
		t.Errorf("NoReserve file holds %d bytes of pages, want 0 (sparse)", got)
	}

	// Reserve takes a range later, as s3load does behind its writes.
	if err := sparse.Reserve(size/2, size/2); err != nil {
		t.Fatal(err)
	}
	if got := blocks(sparse); got != size/2 {
		t.Errorf("after reserving half, the file holds %d bytes of pages, want %d", got, size/2)
	}
	for _, r := range [][2]int64{{-1, 1}, {0, size + 1}, {size, 1}, {1, -1}} {
		if err := sparse.Reserve(r[0], r[1]); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Errorf("Reserve(%d, %d): %v, want an error saying the range is outside the file", r[0], r[1], err)
		}
	}
	// Reserving changes no byte: a sealed file allows it.
	if err := sparse.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := sparse.Reserve(0, size/2); err != nil || blocks(sparse) != size {
		t.Errorf("Reserve on a sealed file: %v, %d bytes of pages; want nil, %d", err, blocks(sparse), size)
	}
}

func TestWriteOutsideFile(t *testing.T) {
	f := newFile(t, 10)
	for _, off := range []int64{-1, 8, 11} {
		if _, err := f.WriteAt([]byte("abc"), off); err == nil {
			t.Errorf("WriteAt(3 bytes, %d) on a 10-byte file succeeded", off)
		}
	}
}

func TestSeal(t *testing.T) {
	f := newFile(t, 4096)
	if _, err := f.WriteAt([]byte("model"), 0); err != nil {
		t.Fatal(err)
	}
	m, err := f.Map()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Seal(); err != nil {
		t.Fatalf("Seal with a read-only mapping: %v", err)
	}
	if err := f.Seal(); err != nil {
		t.Fatalf("second Seal: %v", err)
	}
	if _, err := f.WriteAt([]byte("evil"), 0); !errors.Is(err, memfd.ErrSealed) {
		t.Errorf("WriteAt after Seal: err = %v, want ErrSealed", err)
	}
	// Writers going around the File through the path are refused too.
	if w, err := os.OpenFile(f.Path(), os.O_WRONLY, 0); err == nil {
		_, werr := w.WriteAt([]byte("evil"), 0)
		w.Close()
		if werr == nil {
			t.Error("write through /proc/self/fd path after Seal succeeded")
		}
	}
	if err := unix.Ftruncate(int(f.Fd()), 1); err == nil {
		t.Error("shrinking a sealed file succeeded")
	}
	if string(m[:5]) != "model" {
		t.Errorf("mapping holds %q, want %q", m[:5], "model")
	}
}

// TestPunchHole gives three pages back: they read as zeros through the
// mapping and ReadAt, the kernel holds three pages fewer, the rest of the
// file is intact; once sealed, punching is refused.
func TestPunchHole(t *testing.T) {
	const page = 4096
	f := newFile(t, 8*page)
	data := pattern(8 * page)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	m, err := f.Map()
	if err != nil {
		t.Fatal(err)
	}
	blocks := func() int64 {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	before := blocks()
	if err := f.PunchHole(2*page, 3*page); err != nil {
		t.Fatal(err)
	}
	if freed := before - blocks(); freed != 3*page {
		t.Errorf("freed %d bytes, want %d", freed, 3*page)
	}
	want := bytes.Clone(data)
	clear(want[2*page : 5*page])
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) || !bytes.Equal(m, want) {
		t.Error("after the punch the file does not read as the data with zeros in the hole")
	}
	for _, bad := range [][2]int64{{-1, 1}, {0, -1}, {7 * page, 2 * page}} {
		if err := f.PunchHole(bad[0], bad[1]); err == nil {
			t.Errorf("PunchHole(%d, %d): no error", bad[0], bad[1])
		}
	}
	if err := f.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := f.PunchHole(0, page); !errors.Is(err, memfd.ErrSealed) {
		t.Errorf("PunchHole after Seal: %v, want ErrSealed", err)
	}
	if !bytes.Equal(m[:page], data[:page]) {
		t.Error("a refused punch changed the file")
	}
}

func TestMap(t *testing.T) {
	want := pattern(1 << 20)
	f := newFile(t, int64(len(want)))
	if _, err := f.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	m1, err := f.Map()
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := f.Map()
	if !bytes.Equal(m1, want) {
		t.Error("mapping differs from what was written")
	}
	if &m1[0] != &m2[0] {
		t.Error("Map returned two different mappings")
	}
	empty, err := newFile(t, 0).Map()
	if err != nil || len(empty) != 0 {
		t.Errorf("Map of empty file = %d bytes, %v", len(empty), err)
	}
}

func TestInsufficientMemory(t *testing.T) {
	// The precheck must refuse before touching any memory: 1 PiB is more
	// than any machine this runs on has.
	const huge = 1 << 50
	f, err := memfd.New("huge-model.gguf", huge)
	if err == nil {
		f.Close()
		t.Fatal("New(1 PiB) succeeded")
	}
	if !errors.Is(err, memfd.ErrInsufficientMemory) {
		t.Fatalf("err = %v, want ErrInsufficientMemory", err)
	}
	var merr *memfd.MemoryError
	if !errors.As(err, &merr) {
		t.Fatalf("err is %T, want *MemoryError", err)
	}
	if merr.Requested != huge || merr.Available <= 0 || merr.Available >= huge {
		t.Errorf("MemoryError = %+v, want Requested %d and a positive Available below it", merr, huge)
	}
	for _, s := range []string{"huge-model.gguf", "1.0 PiB", "available", "MemorySize"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func TestBadInput(t *testing.T) {
	if _, err := memfd.New("x", -1); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("New(-1) err = %v, want a negative-size error", err)
	}
	f := newFile(t, 1)
	if f.Name() != t.Name() {
		t.Errorf("Name() = %q", f.Name())
	}
	long, err := memfd.New(strings.Repeat("n", 400), 1)
	if err != nil {
		t.Fatalf("New with a 400-byte name: %v", err)
	}
	long.Close()
}

func TestCloseReleasesDescriptor(t *testing.T) {
	before := testutil.OpenFDs(t)
	for range 20 {
		f, err := memfd.New("leak", 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Map(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	testutil.CheckFDs(t, before)
}
