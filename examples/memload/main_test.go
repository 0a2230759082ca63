package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/memload/memload/internal/testutil"
)

// TestProgress runs the command against MinIO behind a shaper slow enough
// (16 MB/s, 32 MB in 2 s) for progress to show: plain lines on stderr when
// stdout is a file, a bar redrawn in place on stdout when it is a terminal
// (a pseudo-terminal made by script(1)).
func TestProgress(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "memload")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	m := testutil.NewMinIO(t)
	ctx := context.Background()
	if err := m.CreateBucket(ctx, "models"); err != nil {
		t.Fatal(err)
	}
	sum, err := m.PutRandom(ctx, "models", "m.gguf", 32e6, 9)
	if err != nil {
		t.Fatal(err)
	}
	s := testutil.NewShaper(t, m.Endpoint, testutil.Link{Rate: 16e6})
	env := append(os.Environ(),
		"AWS_ACCESS_KEY_ID="+m.AccessKey, "AWS_SECRET_ACCESS_KEY="+m.SecretKey, "AWS_REGION="+m.Region,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE="+os.DevNull, "AWS_SHARED_CREDENTIALS_FILE="+os.DevNull)
	args := []string{"-endpoint", s.URL, "-sha256", "s3://models/m.gguf"}

	t.Run("not a terminal", func(t *testing.T) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v: %s", err, stderr.String())
		}
		if !strings.Contains(stdout.String(), "sha256   "+sum) {
			t.Errorf("stdout lacks the object's SHA-256 %s:\n%s", sum, stdout.String())
		}
		if strings.Contains(stdout.String(), " MB/s") || strings.ContainsAny(stderr.String(), "\r\033") {
			t.Errorf("progress on stdout, or terminal controls on stderr:\nstdout: %q\nstderr: %q", stdout.String(), stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[len(lines)-1], "s3://models/m.gguf: 32 of 32 MB (100 %)") ||
			!strings.Contains(lines[len(lines)-1], "done in") {
			t.Errorf("stderr does not end with a plain line for the finished load:\n%s", stderr.String())
		}
	})

	t.Run("terminal", func(t *testing.T) {
		if _, err := exec.LookPath("script"); err != nil {
			t.Skip("script(1) not installed: no pseudo-terminal to draw on")
		}
		quoted := make([]string, 0, len(args)+1)
		for _, a := range append([]string{bin}, args...) {
			quoted = append(quoted, "'"+a+"'")
		}
		cmd := exec.Command("script", "-qec", "stty cols 100; "+strings.Join(quoted, " "), os.DevNull)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		o := string(out)
		if strings.Count(o, "\r\033[K") == 0 && strings.Count(o, "\r") < 3 {
			t.Errorf("no bar redrawn in place:\n%q", o)
		}
		if !strings.Contains(o, "] 100 % 32/32 MB") || !strings.Contains(o, "sha256   "+sum) {
			t.Errorf("the terminal shows no finished bar or no SHA-256:\n%q", o)
		}
	})
}
