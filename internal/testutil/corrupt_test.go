package testutil

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCorruptionsStartValid checks that the corruptions' encoder writes the
// generator's model byte for byte, so that each corruption differs from a
// valid model by its damage alone.
func TestCorruptionsStartValid(t *testing.T) {
	cfg := CorruptConfig("qwen2")
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := WriteModel(path, cfg); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := EncodeModel(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("EncodeModel: %d bytes differ from WriteModel's %d", len(got), len(want))
	}
	if h := ModelHeaderLen(cfg); h <= 0 || h%32 != 0 || h > int64(len(want))/10 {
		t.Errorf("ModelHeaderLen = %d", h)
	}
}

func TestCorruptions(t *testing.T) {
	cs, err := Corruptions(CorruptConfig("qwen2"), 1)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := EncodeModel(CorruptConfig("qwen2"))
	classes := map[string]int{}
	names := map[string]bool{}
	for _, c := range cs {
		if names[c.Name] {
			t.Errorf("two corruptions named %s", c.Name)
		}
		names[c.Name] = true
		classes[c.Class]++
		same := &sameWriter{want: good, same: true}
		if _, err := c.WriteTo(same); err != nil {
			t.Fatal(err)
		}
		if same.same && same.n == len(good) {
			t.Errorf("%s: the file is not changed", c.Name)
		}
	}
	for _, class := range []string{"header", "metadata", "hparam", "tensor-type", "tensor-shape", "tensors", "layout", "vocab", "flip"} {
		if classes[class] == 0 {
			t.Errorf("no corruption of class %s", class)
		}
	}
	t.Logf("%d corruptions: %v", len(cs), classes)
	// The same seed gives the same files.
	again, _ := Corruptions(CorruptConfig("qwen2"), 1)
	for i := range cs {
		if strings.HasPrefix(cs[i].Name, "flip/") && !bytes.Equal(cs[i].Bytes(), again[i].Bytes()) {
			t.Fatalf("%s differs between two runs", cs[i].Name)
		}
	}
}

func TestMutateModel(t *testing.T) {
	good, _ := EncodeModel(CorruptConfig("llama"))
	h := ModelHeaderLen(CorruptConfig("llama"))
	if got := MutateModel(good, h, nil); !bytes.Equal(got, good) {
		t.Error("an empty program changed the model")
	}
	for _, p := range [][]byte{{0, 0, 0, 7}, {3, 0x10, 0, 9}, {5, 0, 0x80, 0}, {7, 1, 1, 3}, {0xc6, 1, 2, 3, 4, 5}} {
		got := MutateModel(good, h, p)
		if bytes.Equal(got, good) {
			t.Errorf("program %v changed nothing", p)
		}
		if len(good) > 0 && bytes.Equal(good[:8], good[:8]) && &got[0] == &good[0] {
			t.Errorf("program %v changed the model in place", p)
		}
	}
}

// sameWriter compares what is written with want, without keeping it.
type sameWriter struct {
	want []byte
	n    int
	same bool
}

func (w *sameWriter) Write(p []byte) (int, error) {
	if w.same && (w.n+len(p) > len(w.want) || !bytes.Equal(p, w.want[w.n:w.n+len(p)])) {
		w.same = false
	}
	w.n += len(p)
	return len(p), nil
}
