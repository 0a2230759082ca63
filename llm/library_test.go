package llm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/hybridgroup/yzma/pkg/llama"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm/internal/gguf"
)

// TestTensorTypeSizes checks the GGUF parser's table of ggml types against
// ggml itself, the library in use.
func TestTensorTypeSizes(t *testing.T) {
	if _, err := openLibrary(""); err != nil {
		t.Fatal(err)
	}
	n := 0
	gguf.TensorTypes(func(id uint32, name string, block, size uint64) {
		n++
		gt := llama.GGMLType(id)
		if b, s := llama.GGMLBlockSize(gt), llama.GGMLTypeSize(gt); uint64(b) != block || s != size ||
			!strings.EqualFold(llama.GGMLTypeName(gt), name) {
			t.Errorf("%s (%d): block %d, %d bytes; ggml says %s: %d, %d", name, id, block, size, llama.GGMLTypeName(gt), b, s)
		}
	})
	if n < 20 {
		t.Errorf("only %d types", n)
	}
}

// TestLibraryErrors gives Load broken library directories: each gives an
// ErrLibrary naming the file at fault and the command that fixes it,
// before anything is loaded.
func TestLibraryErrors(t *testing.T) {
	good := os.Getenv(LibraryEnv)
	if _, err := os.Stat(filepath.Join(good, "libllama.so")); err != nil {
		t.Fatalf("%s: %v (run make llama)", LibraryEnv, err)
	}
	other := map[string]string{"amd64": "linux-arm64", "arm64": "linux-x64"}[runtime.GOARCH]
	otherDir := filepath.Join(filepath.Dir(good), other)
	model := testutil.TinyModel(t, "qwen2")

	// copyLib makes a directory with the good libraries, less the names in
	// drop, and edit applied to each file.
	copyLib := func(t *testing.T, from string, drop []string, edit func(name string, b []byte) []byte) string {
		t.Helper()
		dir := t.TempDir()
		names, _ := filepath.Glob(filepath.Join(from, "lib*.so"))
		for _, p := range names {
			name := filepath.Base(p)
			if strings.Contains(strings.Join(drop, " "), name) {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if edit != nil {
				b = edit(name, b)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	tests := []struct {
		name string
		dir  func(t *testing.T) string
		file string // the file the error must name, relative to dir
		want string // and what it must say
	}{
		{"no directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nothing") }, "libllama.so", "is missing"},
		{"no libllama.so", func(t *testing.T) string { return copyLib(t, good, []string{"libllama.so"}, nil) }, "libllama.so", "is missing"},
		{"no libggml-base.so", func(t *testing.T) string { return copyLib(t, good, []string{"libggml-base.so"}, nil) }, "libggml-base.so", "is missing"},
		{"no CPU variant", func(t *testing.T) string {
			names, _ := filepath.Glob(filepath.Join(good, "libggml-cpu-*.so"))
			for i := range names {
				names[i] = filepath.Base(names[i])
			}
			return copyLib(t, good, names, nil)
		}, "", "no CPU backend"},
		{"not ELF", func(t *testing.T) string {
			return copyLib(t, good, nil, func(name string, b []byte) []byte {
				if name == "libggml.so" {
					return []byte("INPUT(libggml.v0.5.0.so)\n")
				}
				return b
			})
		}, "libggml.so", "not a shared library"},
		{"other release", func(t *testing.T) string {
			return copyLib(t, good, nil, func(name string, b []byte) []byte {
				return bytes.ReplaceAll(b, []byte("libllama.v0.5.0.so"), []byte("libllama.v0.4.2.so"))
			})
		}, "libllama.so", "is llama.cpp v0.4.2, this package needs v0.5.0"},
		{"other architecture", func(t *testing.T) string {
			if _, err := os.Stat(filepath.Join(otherDir, "libllama.so")); err != nil {
				t.Skipf("%s: %v (make llama ARCH=%s installs it)", otherDir, err, map[string]string{"amd64": "arm64", "arm64": "amd64"}[runtime.GOARCH])
			}
			return otherDir
		}, "libllama.so", "is for EM_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir(t)
			_, err := Load(context.Background(), model, testOptions, func(o *Options) { o.Library = dir })
			if !errors.Is(err, ErrLibrary) {
				t.Fatalf("Load: %v, want ErrLibrary", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, filepath.Join(dir, tt.file)) || !strings.Contains(msg, tt.want) || !strings.Contains(msg, `"make llama"`) {
				t.Errorf("Load: %v\nwant it to name %s, say %q and give the command", err, filepath.Join(dir, tt.file), tt.want)
			}
		})
	}
	t.Run("executable's lib", func(t *testing.T) {
		// Without an option or the variable, lib/ beside the test binary.
		t.Setenv(LibraryEnv, "")
		_, err := libraryDir("")
		exe, _ := os.Executable()
		want := filepath.Join(filepath.Dir(exe), "lib", "libllama.so")
		if !errors.Is(err, ErrLibrary) || !strings.Contains(err.Error(), want) {
			t.Errorf("libraryDir: %v, want it to name %s", err, want)
		}
		if err := os.Symlink(good, filepath.Join(filepath.Dir(exe), "lib")); err != nil {
			t.Skipf("cannot put lib/ beside the test binary: %v", err)
		}
		defer os.Remove(filepath.Join(filepath.Dir(exe), "lib"))
		if dir, err := libraryDir(""); err != nil || !sameDir(dir, good) {
			t.Errorf("libraryDir = %s, %v; want %s", dir, err, good)
		}
	})
}

// runWithVariant runs the test named test in a child process that loads
// llama.cpp from a directory holding only one CPU variant of lib's: ggml
// then has to use it. The child sees MEMLOAD_TEST_VARIANT set to variant.
func runWithVariant(t *testing.T, lib *library, variant, test string) {
	t.Helper()
	dir := variantLibrary(t, lib, variant)
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), LibraryEnv+"="+dir, "MEMLOAD_TEST_VARIANT="+variant)
	out, err := cmd.CombinedOutput()
	t.Logf("child with only the %s variant:\n%s", variant, out)
	if err != nil || !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("child: %v", err)
	}
}

// variantLibrary returns a directory with lib's libraries and only the
// CPU variant named, skipping t if lib has no such variant.
func variantLibrary(t *testing.T, lib *library, variant string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(lib.dir, "libggml-cpu-"+variant+".so")); err != nil {
		t.Skipf("no %s variant on this architecture", variant)
	}
	dir := t.TempDir()
	for _, name := range []string{"libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu-" + variant + ".so"} {
		target, err := filepath.EvalSymlinks(filepath.Join(lib.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		// libllama asks for libggml.v0.5.0.so by that name.
		os.Symlink(target, filepath.Join(dir, filepath.Base(target)))
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	return dir
}
