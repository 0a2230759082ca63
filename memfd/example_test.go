//go:build linux

package memfd_test

import (
	"bytes"
	"fmt"
	"log"
	"os"

	"github.com/memload/memload/memfd"
)

func Example() {
	data := []byte("GGUF...model bytes")
	f, err := memfd.New("model.gguf", int64(len(data)))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		log.Fatal(err)
	}
	if err := f.Seal(); err != nil {
		log.Fatal(err)
	}
	// Any code that opens paths can now read the bytes.
	b, err := os.ReadFile(f.Path())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", b)
	_, err = f.WriteAt([]byte("x"), 0)
	fmt.Println(err)
	// Output:
	// GGUF...model bytes
	// write memfd:model.gguf: memfd: file is sealed
}

func ExampleFile_Map() {
	f, err := memfd.New("weights", 4)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	f.WriteAt([]byte{1, 2, 3, 4}, 0)
	m, err := f.Map() // read-only, no copy
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m)
	// Output: [1 2 3 4]
}

// ExampleFile_PunchHole gives the memory of a part no longer needed back to
// the kernel, as llm.LoadFile does for weights llama.cpp copied elsewhere,
// and only then seals the file: the kernel refuses to punch a sealed one.
func ExampleFile_PunchHole() {
	page := int64(os.Getpagesize())
	f, err := memfd.New("weights", 3*page)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	f.WriteAt(bytes.Repeat([]byte{7}, int(3*page)), 0)
	if err := f.PunchHole(page, page); err != nil { // the middle page
		log.Fatal(err)
	}
	b := make([]byte, 1)
	var got []byte
	for _, off := range []int64{0, page, 2 * page} {
		f.ReadAt(b, off)
		got = append(got, b[0])
	}
	fmt.Println(got)
	f.Seal()
	fmt.Println(f.PunchHole(0, page))
	// Output:
	// [7 0 7]
	// punch hole memfd:weights: memfd: file is sealed
}

// A sparse file takes its memory as it is written; Reserve takes a range
// of it now, here behind the writes, as s3load does while it downloads.
func ExampleFile_Reserve() {
	f, err := memfd.New("model.gguf", 64<<20, func(o *memfd.Options) { o.NoReserve = true })
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	done := make(chan error)
	go func() { done <- f.Reserve(32<<20, 32<<20) }() // the second half
	f.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0)      // the first bytes, at once
	fmt.Println(<-done)
	// Output:
	// <nil>
}
