package jsonschema

import (
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// toRegexp translates the GBNF of intRange (literals, classes, groups,
// alternatives, repetitions) into an anchored Go regexp.
func toRegexp(t *testing.T, gbnf string) *regexp.Regexp {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(gbnf); i++ {
		switch c := gbnf[i]; c {
		case ' ':
		case '"':
			j := strings.IndexByte(gbnf[i+1:], '"')
			b.WriteString("(?:" + regexp.QuoteMeta(gbnf[i+1:i+1+j]) + ")")
			i += j + 1
		case '(':
			b.WriteString("(?:")
		default:
			b.WriteByte(c)
		}
	}
	return regexp.MustCompile("^(?:" + b.String() + ")$")
}

// TestIntRange checks the integer range rules exactly, number by number,
// around and inside random bounds.
func TestIntRange(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	bound := func() *int64 {
		if r.IntN(5) == 0 {
			return nil
		}
		digits := r.IntN(7)
		v := r.Int64N(int64(pow10(digits))+1) - r.Int64N(int64(pow10(r.IntN(7)))+1)
		return &v
	}
	for range 300 {
		lo, hi := bound(), bound()
		if lo != nil && hi != nil && *lo > *hi {
			lo, hi = hi, lo
		}
		if lo == nil && hi == nil {
			continue // the converter uses the integer rule then
		}
		expr := intRange(lo, hi)
		re := toRegexp(t, expr)
		in := func(n int64) bool { return (lo == nil || n >= *lo) && (hi == nil || n <= *hi) }
		check := func(n int64) {
			if got := re.MatchString(strconv.FormatInt(n, 10)); got != in(n) {
				t.Fatalf("range [%v, %v]: %d matches %v, want %v\n%s", show(lo), show(hi), n, got, in(n), expr)
			}
		}
		for _, p := range []*int64{lo, hi} {
			if p != nil {
				for d := int64(-300); d <= 300; d++ {
					check(*p + d)
				}
			}
		}
		for range 300 {
			check(r.Int64N(2e7) - 1e7)
		}
		for _, n := range []int64{0, 1, -1, 9, 10, 99, 100, 1e15, -1e15, 1e15 - 1, 9999999999999999} {
			check(n)
		}
		for _, s := range []string{"-0", "00", "01", "-01", "007", "", "-"} {
			if re.MatchString(s) {
				t.Fatalf("range [%v, %v] matches %q\n%s", show(lo), show(hi), s, expr)
			}
		}
	}
}

func pow10(n int) int {
	p := 1
	for range n {
		p *= 10
	}
	return p
}

func show(p *int64) string {
	if p == nil {
		return "∞"
	}
	return strconv.FormatInt(*p, 10)
}
