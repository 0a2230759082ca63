package llm_test

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"testing"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
)

// reads records the furthest byte read through it.
type reads struct {
	r io.ReaderAt

	mu  sync.Mutex
	end int64
}

func (r *reads) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.r.ReadAt(p, off)
	r.mu.Lock()
	r.end = max(r.end, off+int64(n))
	r.mu.Unlock()
	return n, err
}

func TestHeaderSize(t *testing.T) {
	path := testutil.TinyModel(t, "llama")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	r := &reads{r: f}
	n, err := llm.HeaderSize(r, size)
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 || n >= size || n%32 != 0 {
		t.Errorf("HeaderSize = %d of %d bytes: want an offset aligned to 32 inside the file", n, size)
	}
	if r.end > min(size, n+64<<10) {
		t.Errorf("HeaderSize read up to byte %d, more than 64 KiB past the header's %d", r.end, n)
	}

	if _, err := llm.HeaderSize(&reads{r: io.NewSectionReader(f, 0, n/2)}, size); !errors.Is(err, llm.ErrInvalidModel) {
		t.Errorf("HeaderSize of half a header: err = %v, want ErrInvalidModel", err)
	}
}

// A download in progress can start llama.cpp's load once the first
// HeaderSize bytes of the model are in place (with Options.NoRepack).
func ExampleHeaderSize() {
	path, cleanup := tinyModel()
	defer cleanup()
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		log.Fatal(err)
	}
	n, err := llm.HeaderSize(f, fi.Size())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("header %d bytes, weights %d bytes\n", n, fi.Size()-n)
	// Output: header 25792 bytes, weights 821504 bytes
}
