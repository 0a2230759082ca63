// Command lambdazip checks that a bootstrap binary and the shared libraries
// it loads will run on Lambda's provided.al2023 runtime, and packs them into
// a deployment zip: bootstrap at the top, the libraries in lib/, where llm
// looks for llama.cpp (beside the executable) and which is on Lambda's
// LD_LIBRARY_PATH (/var/task/lib, for libffi.so.8).
//
//	lambdazip [-glibc 2.34] [-arch amd64] [-llama DIR] [-lib FILE]... -o function.zip bootstrap
//
// -llama is a directory of llama.cpp's prebuilt libraries as `make llama`
// installs them (libllama.v0.5.0.so, libggml.v0.5.0.so, libggml-base.so,
// libggml-cpu-*.so): they go into lib/ as llm loads them (libllama.so,
// libggml.so; libllama finds libggml.v0.5.0.so by its soname). -lib adds
// any other library (libffi.so.8, libstdc++.so.6) by its file name.
//
// The checks, for every ELF file: the machine is the architecture's; the
// libraries it needs are glibc's own, in the zip, or libgcc_s.so.1 (which
// provided.al2023 has); and no symbol needs a glibc version newer than the
// runtime's (2.34 for Amazon Linux 2023). It prints the zip's size.
package main

import (
	"archive/zip"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lambdazip:", err)
		os.Exit(1)
	}
}

type libs []string

func (l *libs) String() string     { return strings.Join(*l, ",") }
func (l *libs) Set(s string) error { *l = append(*l, s); return nil }

func run() error {
	glibc := flag.String("glibc", "2.34", "the newest glibc version the binary may need (Amazon Linux 2023: 2.34)")
	arch := flag.String("arch", "amd64", "the Lambda architecture: amd64 (x86_64) or arm64")
	out := flag.String("o", "function.zip", "the zip to write")
	llama := flag.String("llama", "", "directory of llama.cpp's libraries (make llama installs them into .bin/llama/)")
	var extra libs
	flag.Var(&extra, "lib", "another shared library to put into lib/ (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		return errors.New("usage: lambdazip [-glibc 2.34] [-arch amd64] [-llama DIR] [-lib FILE]... -o function.zip bootstrap")
	}
	files, err := contents(flag.Arg(0), *llama, extra)
	if err != nil {
		return err
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f.name))
	}
	for _, f := range files {
		newest, err := check(f.src, *arch, *glibc, names)
		if err != nil {
			return err
		}
		if f.name == "bootstrap" {
			fmt.Printf("%s: %s ELF, glibc symbols up to %s (limit %s)\n", f.src, *arch, newest, *glibc)
		}
	}
	fmt.Printf("%d libraries in lib/ checked: %s ELF, glibc symbols within %s, needing only glibc, libgcc_s and each other\n", len(files)-1, *arch, *glibc)
	if err := writeZip(*out, files); err != nil {
		return err
	}
	zi, err := os.Stat(*out)
	if err != nil {
		return err
	}
	var unzipped int64
	for _, f := range files {
		if fi, err := os.Stat(f.src); err == nil {
			unzipped += fi.Size()
		}
	}
	fmt.Printf("%s: %.1f MB (%.1f MB unzipped; Lambda's limits: 50 MB zipped for direct upload, 250 MB unzipped)\n",
		*out, float64(zi.Size())/1e6, float64(unzipped)/1e6)
	return nil
}

// file is one entry of the zip: name in the zip, src on disk.
type file struct{ name, src string }

func contents(bin, llama string, extra []string) ([]file, error) {
	files := []file{{"bootstrap", bin}}
	if llama != "" {
		renames := map[string]string{"libllama.v0.5.0.so": "libllama.so", "libggml.v0.5.0.so": "libggml.so", "libggml-base.so": "libggml-base.so"}
		for from, to := range renames {
			if _, err := os.Stat(filepath.Join(llama, from)); err != nil {
				return nil, fmt.Errorf("-llama %s: %w (make llama installs the libraries)", llama, err)
			}
			files = append(files, file{"lib/" + to, filepath.Join(llama, from)})
		}
		variants, _ := filepath.Glob(filepath.Join(llama, "libggml-cpu-*.so"))
		if len(variants) == 0 {
			return nil, fmt.Errorf("-llama %s holds no libggml-cpu-*.so", llama)
		}
		for _, v := range variants {
			files = append(files, file{"lib/" + filepath.Base(v), v})
		}
		if _, err := os.Stat(filepath.Join(llama, "LICENSE")); err == nil {
			files = append(files, file{"lib/LICENSE.llama.cpp", filepath.Join(llama, "LICENSE")})
		}
	}
	for _, l := range extra {
		files = append(files, file{"lib/" + filepath.Base(l), l})
	}
	slices.SortFunc(files[1:], func(a, b file) int { return strings.Compare(a.name, b.name) })
	return files, nil
}

// allowedLibs are the shared libraries of glibc itself, present in every
// Lambda runtime, and libgcc_s, which provided.al2023 has (Debian's own
// needs glibc 2.35, so it cannot be shipped).
var allowedLibs = []string{"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
	"ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libgcc_s.so.1"}

// check returns the newest glibc version bin needs, or an error when bin is
// not fit for the runtime. A file that is not ELF (a licence) passes.
func check(bin, arch, limit string, inZip []string) (string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		var ferr *elf.FormatError
		if errors.As(err, &ferr) && !strings.HasSuffix(bin, ".so") && !strings.Contains(bin, ".so.") && filepath.Base(bin) != "bootstrap" {
			return "", nil
		}
		return "", err
	}
	defer f.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if want == 0 {
		return "", fmt.Errorf("unknown architecture %q: amd64 or arm64", arch)
	}
	if f.Machine != want {
		return "", fmt.Errorf("%s is built for %v, not %s", bin, f.Machine, arch)
	}
	libs, err := f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) { // none: a static binary
		return "", err
	}
	for _, l := range libs {
		if !slices.Contains(allowedLibs, l) && !slices.Contains(inZip, l) && !sonameInZip(l, inZip) {
			return "", fmt.Errorf("%s needs %s, which is not in the zip, and the provided.al2023 runtime may lack it or have an older version", bin, l)
		}
	}
	syms, err := f.ImportedSymbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return "", err
	}
	newest := "GLIBC_2.0"
	var tooNew []string
	for _, s := range syms {
		v, ok := strings.CutPrefix(s.Version, "GLIBC_")
		if !ok {
			continue
		}
		if versionLess(newest[len("GLIBC_"):], v) {
			newest = s.Version
		}
		if versionLess(limit, v) {
			tooNew = append(tooNew, s.Name+"@"+s.Version)
		}
	}
	if len(tooNew) > 0 {
		slices.Sort(tooNew)
		return "", fmt.Errorf("%s needs glibc symbols newer than %s, which Amazon Linux 2023 lacks: %s", bin, limit, strings.Join(tooNew, ", "))
	}
	return newest, nil
}

// sonameInZip reports whether lib is the soname of a library the zip holds
// under another name (libggml.v0.5.0.so as lib/libggml.so).
func sonameInZip(lib string, inZip []string) bool {
	for _, name := range inZip {
		if base, ok := strings.CutSuffix(name, ".so"); ok && strings.HasPrefix(lib, base+".v") && strings.HasSuffix(lib, ".so") {
			return true
		}
	}
	return false
}

// versionLess compares dotted versions such as 2.34 and 2.4 numerically.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// writeZip writes a zip holding files: bootstrap executable, the rest
// readable.
func writeZip(out string, files []file) (err error) {
	dst, err := os.Create(out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(out)
		}
	}()
	zw := zip.NewWriter(dst)
	for _, f := range files {
		if err := addFile(zw, f); err != nil {
			return err
		}
	}
	return zw.Close()
}

func addFile(zw *zip.Writer, f file) error {
	src, err := os.Open(f.src)
	if err != nil {
		return err
	}
	defer src.Close()
	h := &zip.FileHeader{Name: f.name, Method: zip.Deflate, Modified: time.Unix(0, 0).UTC()}
	h.SetMode(0o644)
	if f.name == "bootstrap" || strings.HasSuffix(f.name, ".so") || strings.Contains(f.name, ".so.") {
		h.SetMode(0o755)
	}
	w, err := zw.CreateHeader(h)
	if err != nil {
		return err
	}
	_, err = io.Copy(w, src)
	return err
}
