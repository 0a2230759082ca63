package s3load_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/memfd"
	"github.com/memload/memload/s3load"
)

// TestOnPrefix checks that OnPrefix tells, in order and one call at a
// time, of prefixes that are really in place in the destination.
func TestOnPrefix(t *testing.T) {
	const part, size = 64 << 10, 9*(64<<10) + 123
	uri, sum := putObject(t, size)
	want := testutil.RandomBytes(size, size)
	for _, to := range []string{"Load", "LoadTo"} {
		t.Run(to, func(t *testing.T) {
			var dst *memfd.File
			var calls []int64
			var inside atomic.Int32
			onPrefix := func(w io.WriterAt, n int64) {
				if inside.Add(1) != 1 {
					t.Error("OnPrefix called while another call runs")
				}
				defer inside.Add(-1)
				f, ok := w.(*memfd.File)
				if !ok || dst != nil && f != dst {
					t.Errorf("OnPrefix(%T %p) with another destination than %p", w, w, dst)
					return
				}
				dst = f
				got := make([]byte, n)
				if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, want[:n]) {
					t.Errorf("OnPrefix(%d): the bytes in place differ from the object's (%v)", n, err)
				}
				calls = append(calls, n)
			}
			l := s3load.New(client(), func(o *s3load.Options) {
				o.PartSize, o.Concurrency, o.SHA256, o.OnPrefix = part, 4, sum, onPrefix
			})
			var f *memfd.File
			var err error
			if to == "Load" {
				f, _, err = l.Load(context.Background(), uri)
			} else {
				if f, err = memfd.New("prefix", size); err != nil {
					t.Fatal(err)
				}
				dst = f
				_, err = l.LoadTo(context.Background(), uri, f)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f != dst {
				t.Errorf("OnPrefix's destination %p is not the file loaded, %p", dst, f)
			}
			if len(calls) == 0 || calls[len(calls)-1] != size {
				t.Fatalf("OnPrefix calls %v: want the last to give the whole %d bytes", calls, size)
			}
			for i, n := range calls {
				if n%part != 0 && n != size || i > 0 && n <= calls[i-1] {
					t.Errorf("OnPrefix calls %v: want growing whole parts (the buffer holds a whole part here)", calls)
					break
				}
			}
		})
	}
}

// TestOnRelease checks that OnRelease tells only of bytes the load is done
// with: a consumer that gives back (punches) every byte released as it
// is released leaves a load that still verifies its SHA-256, while one
// that punches the bytes OnPrefix tells of fails it (the control: the
// SHA-256 is read back from the memfd, after OnPrefix). Without SHA256,
// OnRelease follows OnPrefix.
func TestOnRelease(t *testing.T) {
	const part, size = 64 << 10, 9*(64<<10) + 123
	uri, sum := putObject(t, size)
	for _, tc := range []struct {
		name    string
		sha256  string
		punchAt string // the hook whose bytes are punched
		fails   bool
	}{
		{"sha256", sum, "OnRelease", false},
		{"sha256/control", sum, "OnPrefix", true},
		{"no-sha256", "", "OnRelease", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prefix atomic.Int64
			var prefixes, releases []int64
			var inside atomic.Int32
			punched := int64(0)
			punch := func(w io.WriterAt, n int64) {
				f := w.(*memfd.File)
				if err := f.PunchHole(punched, n-punched); err != nil {
					t.Errorf("punch [%d, %d): %v", punched, n, err)
				}
				punched = n
			}
			l := s3load.New(client(), func(o *s3load.Options) {
				o.PartSize, o.Concurrency, o.SHA256, o.NoSeal = part, 4, tc.sha256, true
				o.OnPrefix = func(w io.WriterAt, n int64) {
					prefix.Store(n)
					prefixes = append(prefixes, n)
					if tc.punchAt == "OnPrefix" {
						punch(w, n)
					}
				}
				o.OnRelease = func(w io.WriterAt, n int64) {
					if inside.Add(1) != 1 {
						t.Error("OnRelease called while another call runs")
					}
					defer inside.Add(-1)
					if p := prefix.Load(); n > p {
						t.Errorf("OnRelease(%d) past the %d bytes in place", n, p)
					}
					if len(releases) > 0 && n <= releases[len(releases)-1] {
						t.Errorf("OnRelease(%d) after OnRelease(%d)", n, releases[len(releases)-1])
					}
					releases = append(releases, n)
					if tc.punchAt == "OnRelease" {
						punch(w, n)
					}
				}
			})
			f, stats, err := l.Load(context.Background(), uri)
			if tc.fails {
				if !errors.Is(err, s3load.ErrChecksum) {
					t.Fatalf("punching what OnPrefix tells: err %v, want ErrChecksum", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if tc.sha256 != "" && !strings.Contains(stats.Verified, "SHA-256") {
				t.Errorf("Verified %q: want SHA-256 checked", stats.Verified)
			}
			if len(releases) == 0 || releases[len(releases)-1] != size {
				t.Fatalf("OnRelease calls %v: want the last to give the whole %d bytes", releases, size)
			}
			for _, n := range releases {
				if !slices.Contains(prefixes, n) {
					t.Errorf("OnRelease(%d) is not a prefix OnPrefix told of (%v)", n, prefixes)
				}
			}
			got := make([]byte, size)
			if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, make([]byte, size)) {
				t.Errorf("the released bytes were not all given back (%v): the test punches nothing", err)
			}
		})
	}
}

// TestOnPart checks that OnPart tells of each part once it is in place,
// wherever it lies, before OnPrefix tells of it (but for the first part,
// which OnPrefix tells of as it arrives), and of every byte once.
func TestOnPart(t *testing.T) {
	const part, size = 64 << 10, 9*(64<<10) + 123
	uri, sum := putObject(t, size)
	want := testutil.RandomBytes(size, size)
	var mu sync.Mutex
	var parts [][2]int64
	told := int64(0) // by OnPrefix
	l := s3load.New(client(), func(o *s3load.Options) {
		o.PartSize, o.Concurrency, o.SHA256 = part, 4, sum
		// The last part first: parts land out of order.
		o.Order = func(io.ReaderAt, int64, int64) [][2]int64 { return [][2]int64{{size - 1, size}} }
		o.OnPart = func(w io.WriterAt, start, end int64) {
			got := make([]byte, end-start)
			if _, err := w.(io.ReaderAt).ReadAt(got, start); err != nil || !bytes.Equal(got, want[start:end]) {
				t.Errorf("OnPart(%d, %d): the bytes in place differ from the object's (%v)", start, end, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if start > 0 && start < told {
				t.Errorf("OnPart(%d, %d) after OnPrefix told of %d bytes", start, end, told)
			}
			parts = append(parts, [2]int64{start, end})
		}
		o.OnPrefix = func(_ io.WriterAt, n int64) {
			mu.Lock()
			defer mu.Unlock()
			told = n
		}
	})
	f, _, err := l.Load(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	slices.SortFunc(parts, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	at := int64(0)
	for _, p := range parts {
		if p[0] != at || p[1] <= p[0] || p[1]-p[0] > part {
			t.Fatalf("OnPart ranges %v: want each part once, covering [0, %d)", parts, size)
		}
		at = p[1]
	}
	if at != size {
		t.Fatalf("OnPart ranges %v end at %d, want %d", parts, at, size)
	}
}

// TestOnPrefixFirstPart checks that OnPrefix tells of the first part's
// bytes as they arrive, before the part is whole (a consumer starts on
// the object's head), with the bytes told of in place, and then of whole
// parts.
func TestOnPrefixFirstPart(t *testing.T) {
	const part, size = 4 << 20, 10<<20 + 5
	uri, sum := putObject(t, size)
	want := testutil.RandomBytes(size, size)
	var calls []int64
	var ordered []int64
	l := s3load.New(client(), func(o *s3load.Options) {
		o.PartSize, o.Concurrency, o.SHA256 = part, 3, sum
		o.OnPrefix = func(w io.WriterAt, n int64) {
			got := make([]byte, n)
			if _, err := w.(io.ReaderAt).ReadAt(got, 0); err != nil || !bytes.Equal(got, want[:n]) {
				t.Errorf("OnPrefix(%d): the bytes in place differ from the object's (%v)", n, err)
			}
			calls = append(calls, n)
		}
		o.Order = func(prefix io.ReaderAt, n, size int64) [][2]int64 {
			ordered = append(ordered, n)
			return nil
		}
	})
	f, _, err := l.Load(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(calls) == 0 || calls[0] >= part || calls[len(calls)-1] != size {
		t.Fatalf("OnPrefix calls %v: want the first within the first part of %d bytes, the last the whole %d", calls, part, size)
	}
	for i, n := range calls {
		if i > 0 && n <= calls[i-1] || n > part && n%part != 0 && n != size {
			t.Errorf("OnPrefix calls %v: want growing prefixes, whole parts after the first", calls)
			break
		}
	}
	if len(ordered) == 0 || ordered[0] >= part {
		t.Errorf("Order offered %v: want the head of the first part before it is whole", ordered)
	}
}
