package s3load_test

import (
	"bytes"
	"context"
	"io"
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
					t.Errorf("OnPrefix calls %v: want growing whole parts", calls)
					break
				}
			}
		})
	}
}
