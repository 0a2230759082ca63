package main

import (
	"archive/zip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"2.34", "2.35", true},
		{"2.4", "2.34", true},
		{"2.34", "2.34", false},
		{"2.34", "2.3.4", false},
		{"2.2.5", "2.3", true},
	} {
		if got := versionLess(tc.a, tc.b); got != tc.less {
			t.Errorf("versionLess(%s, %s) = %v", tc.a, tc.b, got)
		}
	}
}

// TestThisBinary checks the test binary itself, a dynamically linked Linux
// executable, and zips it.
// TestNeeds checks a library against what the zip holds: Debian's
// libstdc++ needs libgcc_s (allowed: provided.al2023 has it) and glibc
// symbols newer than 2.34 (refused).
func TestNeeds(t *testing.T) {
	const lib = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
	if _, err := os.Stat(lib); err != nil {
		t.Skip(err)
	}
	_, err := check(lib, "amd64", "2.34", nil)
	if err == nil || !strings.Contains(err.Error(), "newer than 2.34") {
		t.Errorf("Debian's libstdc++: %v, want glibc symbols newer than 2.34", err)
	}
	if !sonameInZip("libggml.v0.5.0.so", []string{"libggml.so"}) || sonameInZip("libggml-base.so", []string{"libggml.so"}) {
		t.Error("sonameInZip")
	}
}

func TestThisBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := check(exe, "arm64", "2.34", nil); err == nil || !strings.Contains(err.Error(), "not arm64") {
		t.Errorf("arm64 check of an amd64 binary: %v", err)
	}
	// The bootstrap itself is checked by the chatbot's end-to-end test.
	if _, err := check(exe, "amd64", "2.34", nil); err != nil {
		t.Errorf("check: %v", err)
	}
	out := filepath.Join(t.TempDir(), "function.zip")
	if err := writeZip(out, []file{{"bootstrap", exe}}); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if len(zr.File) != 1 || zr.File[0].Name != "bootstrap" || zr.File[0].Mode().Perm() != 0o755 {
		t.Errorf("zip holds %v", zr.File)
	}
}
