// Command lambdazip checks that a bootstrap binary will run on Lambda's
// provided.al2023 runtime and packs it into a deployment zip.
//
//	lambdazip [-glibc 2.34] [-arch amd64] -o function.zip bootstrap
//
// The checks: the ELF machine is the architecture's, the shared libraries
// it needs are glibc's own (libstdc++ and libgcc must be linked statically:
// Amazon Linux 2023's are older), and no symbol needs a glibc version newer
// than the runtime's (2.34 for Amazon Linux 2023). It prints the zip's size.
package main

import (
	"archive/zip"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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

func run() error {
	glibc := flag.String("glibc", "2.34", "the newest glibc version the binary may need (Amazon Linux 2023: 2.34)")
	arch := flag.String("arch", "amd64", "the Lambda architecture: amd64 (x86_64) or arm64")
	out := flag.String("o", "function.zip", "the zip to write")
	flag.Parse()
	if flag.NArg() != 1 {
		return errors.New("usage: lambdazip [-glibc 2.34] [-arch amd64] -o function.zip bootstrap")
	}
	bin := flag.Arg(0)
	newest, err := check(bin, *arch, *glibc)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s ELF, glibc symbols up to %s (limit %s), libstdc++ and libgcc linked statically\n", bin, *arch, newest, *glibc)
	if err := writeZip(*out, bin); err != nil {
		return err
	}
	zi, err := os.Stat(*out)
	if err != nil {
		return err
	}
	bi, _ := os.Stat(bin)
	fmt.Printf("%s: %.1f MB (bootstrap %.1f MB unzipped; Lambda's limits: 50 MB zipped for direct upload, 250 MB unzipped)\n",
		*out, float64(zi.Size())/1e6, float64(bi.Size())/1e6)
	return nil
}

// allowedLibs are the shared libraries of glibc itself, present in every
// Lambda runtime.
var allowedLibs = []string{"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
	"ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}

// check returns the newest glibc version bin needs, or an error when bin is
// not fit for the runtime.
func check(bin, arch, limit string) (string, error) {
	f, err := elf.Open(bin)
	if err != nil {
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
		if !slices.Contains(allowedLibs, l) {
			return "", fmt.Errorf("%s needs %s, which the provided.al2023 runtime may lack or have in an older version: link it statically", bin, l)
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

// writeZip writes a zip holding bin as an executable named bootstrap.
func writeZip(out, bin string) (err error) {
	src, err := os.Open(bin)
	if err != nil {
		return err
	}
	defer src.Close()
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
	h := &zip.FileHeader{Name: "bootstrap", Method: zip.Deflate, Modified: time.Unix(0, 0).UTC()}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, src); err != nil {
		return err
	}
	return zw.Close()
}
