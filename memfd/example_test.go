//go:build linux

package memfd_test

import (
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
