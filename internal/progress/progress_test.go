package progress

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// clock is a fake time source the test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestRenderTerminal(t *testing.T) {
	for _, c := range []struct {
		done    int64
		rate    float64
		elapsed time.Duration
		want    string
	}{
		{0, 0, 0, "model [>                                             ]   0 % 0/1100 MB   0.0 MB/s -"},
		{550e6, 75e6, 7 * time.Second, "model [=======================>                      ]  50 % 550/1100 MB  75.0 MB/s 7s left"},
		{1100e6, 75e6, 14700 * time.Millisecond, "model [==============================================] 100 % 1100/1100 MB  75.0 MB/s done in 14.7s"},
	} {
		got := render("model", c.done, 1100e6, c.elapsed, c.rate, true, 100)
		if got != c.want {
			t.Errorf("render(%d) =\n%q\nwant\n%q", c.done, got, c.want)
		}
		if len(got) > 100 {
			t.Errorf("render(%d) is %d columns wide, want at most 100", c.done, len(got))
		}
	}
	// A long label is cut short for the bar.
	long := strings.Repeat("x", 60)
	if got, want := render(long, 550e6, 1100e6, 0, 75e6, true, 100), "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... [=======>       ]  50 % 550/1100 MB  75.0 MB/s 7s left"; got != want {
		t.Errorf("long label render = %q, want %q", got, want)
	}
	// Too narrow for a bar: numbers only.
	if got, want := render("model", 550e6, 1100e6, 0, 75e6, true, 30), "model  50 % 550/1100 MB  75.0 MB/s 7s left"; got != want {
		t.Errorf("narrow render = %q, want %q", got, want)
	}
}

func TestBarTerminalRedrawsInPlace(t *testing.T) {
	var out bytes.Buffer
	c := &clock{time.Unix(1000, 0)}
	b := newBar(&out, "model", 100e6, true, 80, c.now)
	for i := int64(1); i <= 10; i++ {
		c.t = c.t.Add(200 * time.Millisecond)
		b.Set(i * 10e6) // 50 MB/s
	}
	b.Interrupt(func() { out.WriteString("a log line\n") })
	b.Done()
	s := out.String()
	if strings.Count(s, "\n") != 2 {
		t.Errorf("a terminal bar wrote %d lines, want the log line and the end of the bar:\n%q", strings.Count(s, "\n"), s)
	}
	if !strings.Contains(s, "\r\033[Ka log line\n") {
		t.Errorf("Interrupt did not clear the bar before the log line:\n%q", s)
	}
	last := s[strings.LastIndex(s, "\r")+1:]
	if !strings.Contains(last, "100 % 100/100 MB  50.0 MB/s done in 2s") {
		t.Errorf("final bar = %q, want 100 %%, 50 MB/s, done in 2s", last)
	}
	b.Set(5) // after Done: nothing
	if out.String() != s {
		t.Error("Set after Done drew again")
	}
}

func TestBarPlainLines(t *testing.T) {
	var out bytes.Buffer
	c := &clock{time.Unix(1000, 0)}
	b := newBar(&out, "model", 100e6, false, 0, c.now)
	for i := int64(1); i <= 10; i++ {
		c.t = c.t.Add(time.Second)
		b.Set(i * 10e6) // 10 MB/s, 10 s
	}
	b.Done()
	s := out.String()
	if strings.ContainsAny(s, "\r\033") {
		t.Errorf("plain output holds terminal controls: %q", s)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	// The first write's line, one every 2 s after it, and the final one.
	if len(lines) != 6 {
		t.Fatalf("%d lines, want 6:\n%s", len(lines), s)
	}
	if want := "model: 10 of 100 MB (10 %), 10.0 MB/s, 9s left"; lines[0] != want {
		t.Errorf("first line = %q, want %q", lines[0], want)
	}
	if want := "model: 100 of 100 MB (100 %), 10.0 MB/s, done in 10s"; lines[5] != want {
		t.Errorf("last line = %q, want %q", lines[5], want)
	}
}

func TestNewOnAFileIsPlain(t *testing.T) {
	f, err := os.Create(t.TempDir() + "/log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b := New(f, "x", 1); b.terminal {
		t.Error("New on a regular file drew as on a terminal")
	}
}
