package jsonschema

import (
	"math/big"
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

// TestDecimalRange checks the decimal range rules exactly on numbers with
// up to four decimals around and inside random bounds.
func TestDecimalRange(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	randDec := func(scale int) string {
		n := r.Int64N(int64(pow10(r.IntN(4)))*int64(pow10(scale))+1) - r.Int64N(int64(pow10(r.IntN(4)))*int64(pow10(scale))+1)
		if r.IntN(4) == 0 {
			n = r.Int64N(3*int64(pow10(scale))) - int64(pow10(scale)) // near zero
		}
		s := new(big.Rat).SetFrac64(n, int64(pow10(scale))).FloatString(scale)
		return s
	}
	bnd := func() bound {
		if r.IntN(5) == 0 {
			return bound{}
		}
		v, _ := new(big.Rat).SetString(randDec(r.IntN(4)))
		return bound{v: v, ex: r.IntN(2) == 0}
	}
	for range 300 {
		lo, hi := bnd(), bnd()
		if lo.v == nil && hi.v == nil {
			continue
		}
		if lo.v != nil && hi.v != nil && lo.v.Cmp(hi.v) > 0 {
			lo, hi = hi, lo
		}
		expr, ok := decimalRange(lo, hi)
		if lo.v != nil && hi.v != nil && lo.v.Cmp(hi.v) == 0 && (lo.ex || hi.ex) {
			if ok {
				t.Fatalf("empty range %v..%v gives %s", lo, hi, expr)
			}
			continue
		}
		re := toRegexp(t, expr)
		in := func(v *big.Rat) bool {
			if lo.v != nil && (v.Cmp(lo.v) < 0 || (lo.ex && v.Cmp(lo.v) == 0)) {
				return false
			}
			return hi.v == nil || v.Cmp(hi.v) < 0 || (!hi.ex && v.Cmp(hi.v) == 0)
		}
		check := func(s string) {
			v, _ := new(big.Rat).SetString(s)
			if got := re.MatchString(s); got != in(v) {
				t.Fatalf("range %s%v, %v%s: %s matches %v, want %v\n%s", map[bool]string{true: "(", false: "["}[lo.ex], lo.v, hi.v, map[bool]string{true: ")", false: "]"}[hi.ex], s, got, in(v), expr)
			}
		}
		for range 2000 {
			s := randDec(r.IntN(5))
			if strings.HasPrefix(s, "-") && strings.Trim(s, "-0.") == "" {
				continue // -0: never generated, checked below
			}
			check(s)
		}
		for _, b := range []bound{lo, hi} {
			if b.v == nil {
				continue
			}
			for d := -50; d <= 50; d++ {
				v := new(big.Rat).Add(b.v, big.NewRat(int64(d), 1000))
				s := v.FloatString(3)
				if strings.HasPrefix(s, "-") && strings.Trim(s, "-0.") == "" {
					continue
				}
				check(s)
				check(strings.TrimRight(strings.TrimRight(s, "0"), "."))
			}
		}
		for _, s := range []string{"-0", "-0.0", "00", "01.5", ".5", "1.", "", "-"} {
			if re.MatchString(s) {
				t.Fatalf("range %v..%v matches %q\n%s", lo.v, hi.v, s, expr)
			}
		}
	}
}
