package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestPhases feeds the display the states /healthz reports during a load
// and checks what a person reading a log (not a terminal) sees: one line
// per phase, in order, and plain progress lines for the download ending at
// 100 %.
func TestPhases(t *testing.T) {
	var out bytes.Buffer
	p := &phases{out: &out}
	const total = 100e6
	p.update(&health{Phase: "config"})
	for loaded := int64(0); loaded <= total; loaded += 25e6 {
		p.update(&health{Phase: "download", Loaded: loaded, Total: total})
	}
	p.print(func() { out.WriteString("  chatbot | a log line\n") })
	p.update(&health{Phase: "verify", Loaded: total, Total: total})
	p.update(&health{Phase: "llama.cpp", Loaded: total, Total: total})
	p.update(&health{Phase: "ready", Status: "ready", Loaded: total, Total: total})

	s := out.String()
	t.Logf("output:\n%s", s)
	if strings.ContainsAny(s, "\r\033") {
		t.Errorf("terminal controls in output that is not a terminal:\n%q", s)
	}
	last := -1
	for _, want := range []string{phaseWords["config"], phaseWords["download"], "download: 0 of 100 MB",
		"a log line", "download: 100 of 100 MB (100 %)", phaseWords["verify"], phaseWords["llama.cpp"], "s  ready"} {
		i := strings.Index(s, want)
		if i < 0 || i < last {
			t.Fatalf("%q missing or out of order in:\n%s", want, s)
		}
		last = i
	}
	if n := strings.Count(s, phaseWords["download"]); n != 1 {
		t.Errorf("the download phase was announced %d times, want once:\n%s", n, s)
	}
}

// TestPrintColdStart checks that the breakdown says when llama.cpp loaded,
// whether it repacked, and how long the model trailed its last byte.
func TestPrintColdStart(t *testing.T) {
	for _, c := range []struct {
		early bool
		want  string
	}{{true, "during the download; repacking true"}, {false, "after the download; repacking true"}} {
		var h health
		h.ColdStart.Source, h.ColdStart.Bytes, h.ColdStart.TotalMS = "s3://models/m.gguf", 1.1e9, 12000
		h.ColdStart.Early, h.ColdStart.Repack, h.ColdStart.ReadyAfter = c.early, true, 250
		var out bytes.Buffer
		printColdStart(&out, &h)
		if s := out.String(); !strings.Contains(s, c.want) || !strings.Contains(s, "ready after the last byte   0.25 s") {
			t.Errorf("early %v: want %q and the time after the last byte in:\n%s", c.early, c.want, s)
		}
	}
}
