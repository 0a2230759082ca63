package llm

import (
	"slices"
	"strings"
	"testing"
)

func TestStreamer(t *testing.T) {
	tests := []struct {
		name    string
		stop    []string
		pieces  []string
		want    []string // what the callback receives, in order
		stopped bool
	}{
		{"no stop", nil, []string{"a", "b"}, []string{"a", "b"}, false},
		{"stop inside a piece", []string{"STOP"}, []string{"abSTOPcd"}, []string{"ab"}, true},
		{"stop across pieces", []string{"STOP"}, []string{"ab S", "T", "OP x"}, []string{"ab ", ""}, true},
		{"false start released", []string{"STOP"}, []string{"aS", "Tx"}, []string{"a", "STx"}, false},
		{"earliest of two stops", []string{"yz", "xy"}, []string{"wxyz"}, []string{"w"}, true},
		{"stop at the start", []string{"<|"}, []string{"<", "|x"}, nil, true},
		{"split UTF-8 character", nil, []string{"h\xc3", "\xa9!"}, []string{"h", "é!"}, false},
		{"split 4-byte character", nil, []string{"\xf0\x9f", "\x98", "\x80"}, []string{"😀"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			s := streamer{stop: tt.stop, emit: func(p string) error { got = append(got, p); return nil }}
			stopped := false
			for _, p := range tt.pieces {
				var err error
				if stopped, err = s.write(p); err != nil {
					t.Fatal(err)
				}
				if stopped {
					break
				}
			}
			if !stopped {
				s.flush()
			}
			// Empty pieces are never sent.
			want := slices.DeleteFunc(slices.Clone(tt.want), func(s string) bool { return s == "" })
			if !slices.Equal(got, want) || stopped != tt.stopped {
				t.Errorf("got %q stopped=%v, want %q stopped=%v", got, stopped, want, tt.stopped)
			}
			for _, p := range got {
				for _, stop := range tt.stop {
					if strings.Contains(p, stop[:1]) && strings.Contains(strings.Join(got, ""), stop) {
						t.Errorf("stop string %q leaked", stop)
					}
				}
			}
		})
	}
}

func TestPartialRune(t *testing.T) {
	for s, want := range map[string]int{"": 0, "a": 0, "é": 0, "\xc3": 1, "a\xe2\x82": 2, "\xf0\x9f\x98": 3, "\x80": 0, "😀": 0} {
		if got := partialRune(s); got != want {
			t.Errorf("partialRune(%q) = %d, want %d", s, got, want)
		}
	}
}
