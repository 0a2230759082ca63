package llm

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/memload/memload/internal/testutil"
)

var fuzzBase = sync.OnceValues(func() ([]byte, error) { return testutil.EncodeModel(testutil.CorruptConfig("qwen2")) })

// FuzzLoad changes a valid model as its input says (testutil.MutateModel
// reads the input as a list of edits: flips, edge values written over
// fields, cuts) and loads the result in a child process, as
// TestCorruptModels does: a crash, a hang or an unclassified error fails.
// A file the GGUF check refuses never reaches llama.cpp (Load returns
// before it opens the library), so it is loaded here, not in a child.
func FuzzLoad(f *testing.F) {
	base, err := fuzzBase()
	if err != nil {
		f.Fatal(err)
	}
	hdr := testutil.ModelHeaderLen(testutil.CorruptConfig("qwen2"))
	for _, p := range [][]byte{
		nil,
		{0, 0x00, 0x10, 0x40}, {2, 0x80, 0x20, 0x00}, {3, 0x00, 0x30, 4}, {4, 0x00, 0x70, 9},
		{0x83, 0x00, 0x80, 0}, {5, 0x00, 0xf0, 0}, {6, 0x00, 0x50, 8}, {7, 0x00, 0x60, 3},
		{1, 0x10, 0x10, 0x01, 1, 0x20, 0x20, 0x02, 1, 0x30, 0x30, 0x04},
	} {
		f.Add(p)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, program []byte) {
		b := testutil.MutateModel(base, hdr, program)
		path := filepath.Join(dir, "fuzz-"+time.Now().Format("150405.000000000")+".gguf")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(path)
		o, ok := refusedInGo(path)
		if !ok {
			o = runChild(context.Background(), path, time.Minute)
		}
		switch o.kind {
		case "crash", "hang", "unclassified":
			t.Fatalf("%s: %s", o.kind, o.detail)
		}
	})
}
