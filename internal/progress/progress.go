// Package progress shows a download's progress to a person: a bar redrawn
// in place on a terminal (bytes, MB/s, time left), or a plain line now and
// then on anything else, so that logs and pipes stay readable.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Bar is the progress of one download. Its methods are safe for
// concurrent use.
type Bar struct {
	w        io.Writer
	label    string
	total    int64
	terminal bool
	width    int
	every    time.Duration // between redraws (terminal) or lines (plain)
	now      func() time.Time

	mu      sync.Mutex
	start   time.Time
	done    int64
	drawn   time.Time // last redraw or line
	shown   bool      // a bar is on the terminal's current line
	window  []point   // recent progress, for the rate
	stopped bool
}

type point struct {
	at   time.Time
	done int64
}

// rateWindow is how far back the rate looks: long enough to be steady,
// short enough to follow a link that slows after its burst.
const rateWindow = 2 * time.Second

// New returns a bar for total bytes labelled label, drawn on w. It draws
// in place when w is a terminal (an *os.File for which term.IsTerminal
// holds), else writes a plain line every few seconds.
func New(w io.Writer, label string, total int64) *Bar {
	terminal, width := false, 0
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		terminal = true
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil {
			width = cols
		}
	}
	return newBar(w, label, total, terminal, width, time.Now)
}

func newBar(w io.Writer, label string, total int64, terminal bool, width int, now func() time.Time) *Bar {
	if width <= 0 {
		width = 80
	}
	every := 2 * time.Second
	if terminal {
		every = 100 * time.Millisecond
	}
	t := now()
	return &Bar{w: w, label: label, total: total, terminal: terminal, width: width, every: every, now: now,
		start: t, window: []point{{t, 0}}}
}

// Set records that done bytes of the total are in, and redraws when it is
// time to.
func (b *Bar) Set(done int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	now := b.now()
	b.done = done
	b.window = append(b.window, point{now, done})
	for len(b.window) > 2 && now.Sub(b.window[1].at) >= rateWindow {
		b.window = b.window[1:]
	}
	if now.Sub(b.drawn) >= b.every || (done >= b.total && b.terminal) {
		b.draw(now)
	}
}

// Interrupt clears the bar from the terminal, runs print (which writes
// other lines), and draws the bar again below them.
func (b *Bar) Interrupt(print func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.terminal && b.shown {
		fmt.Fprint(b.w, "\r\033[K")
		b.shown = false
	}
	print()
	if b.terminal && !b.stopped {
		b.draw(b.now())
	}
}

// Done draws the final state and ends the bar's line; later calls to Set
// do nothing.
func (b *Bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	b.stopped = true
	now := b.now()
	b.draw(now)
	if b.terminal {
		fmt.Fprintln(b.w)
	}
}

func (b *Bar) draw(now time.Time) {
	b.drawn = now
	line := render(b.label, b.done, b.total, now.Sub(b.start), b.rate(), b.terminal, b.width)
	if b.terminal {
		fmt.Fprint(b.w, "\r"+line+"\033[K")
		b.shown = true
	} else {
		fmt.Fprintln(b.w, line)
	}
}

// rate is bytes per second over the window, 0 before there is any.
func (b *Bar) rate() float64 {
	first, last := b.window[0], b.window[len(b.window)-1]
	// Less than a quarter second says more about buffers than the link.
	if d := last.at.Sub(first.at).Seconds(); d >= 0.25 {
		return float64(last.done-first.done) / d
	}
	return 0
}

// render is one line of progress: for a terminal, a bar filling width
// columns; otherwise words. Sizes and rates are in decimal MB, as networks
// are measured.
func render(label string, done, total int64, elapsed time.Duration, rate float64, terminal bool, width int) string {
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	left := "-"
	switch {
	case done >= total:
		left = "done in " + elapsed.Round(100*time.Millisecond).String()
	case rate > 0:
		left = (time.Duration(float64(total-done) / rate * float64(time.Second))).Round(time.Second).String() + " left"
	}
	if !terminal {
		return fmt.Sprintf("%s: %.0f of %.0f MB (%.0f %%), %.1f MB/s, %s", label, float64(done)/1e6, float64(total)/1e6, 100*frac, rate/1e6, left)
	}
	nums := fmt.Sprintf("%.0f/%.0f MB %5.1f MB/s %s", float64(done)/1e6, float64(total)/1e6, rate/1e6, left)
	// label [=====>    ] 100 % nums, the numbers in a column of their own
	// so that the bar does not jitter as they change: width-1 columns.
	// A long label is cut short before the bar is.
	const numsWidth, minCells = 38, 15
	if room := width - numsWidth - 11 - minCells; len(label) > room && room >= 8 {
		label = label[:room-3] + "..."
	}
	cells := width - len(label) - numsWidth - 11
	if cells < minCells {
		return fmt.Sprintf("%s %3.0f %% %s", label, 100*frac, nums)
	}
	full := int(frac * float64(cells))
	bar := strings.Repeat("=", full)
	if full < cells {
		bar += ">" + strings.Repeat(" ", cells-full-1)
	}
	return strings.TrimRight(fmt.Sprintf("%s [%s] %3.0f %% %-*s", label, bar, 100*frac, numsWidth, nums), " ")
}
