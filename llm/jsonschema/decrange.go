package jsonschema

import (
	"math/big"
	"strconv"
	"strings"
)

// bound is one end of a number range: a value and whether it is excluded.
type bound struct {
	v  *big.Rat // nil: unbounded
	ex bool
}

// decimalRange returns a GBNF expression matching the decimal numbers
// (an integer part and an optional fraction, no exponent) from lo to hi,
// and false if there is none.
func decimalRange(lo, hi bound) (string, bool) {
	zero := new(big.Rat)
	var alts []string
	// Zero and up: from max(lo, 0) to hi.
	if hi.v == nil || hi.v.Sign() > 0 || (hi.v.Sign() == 0 && !hi.ex) {
		from := lo
		if lo.v == nil || lo.v.Sign() < 0 {
			from = bound{v: zero}
		}
		if e, ok := magnitudes(from, hi); ok {
			alts = append(alts, e)
		}
	}
	// Below zero, written as "-" and a magnitude above zero (never -0).
	if lo.v == nil || lo.v.Sign() < 0 {
		from := bound{v: zero, ex: true}
		if hi.v != nil && hi.v.Sign() < 0 {
			from = bound{v: new(big.Rat).Neg(hi.v), ex: hi.ex}
		}
		to := bound{}
		if lo.v != nil {
			to = bound{v: new(big.Rat).Neg(lo.v), ex: lo.ex}
		}
		if e, ok := magnitudes(from, to); ok {
			alts = append(alts, `"-" (`+e+`)`)
		}
	}
	return strings.Join(alts, " | "), len(alts) > 0
}

// anyFraction is an optional fraction of up to 15 digits.
const anyFraction = `("." [0-9]{1,15})?`

// magnitudes matches the numbers from lo (not nil, >= 0) to hi.
func magnitudes(lo, hi bound) (string, bool) {
	li, lf := decimal(lo.v)
	var alts []string
	add := func(intPart string, f frac) {
		if e, ok := f.after(intPart); ok {
			alts = append(alts, e)
		}
	}
	if hi.v == nil {
		add(`"`+strconv.FormatInt(li, 10)+`"`, ge(lf, lo.ex))
		if li+1 < 1e15 {
			alts = append(alts, "("+digitsFrom(li+1)+") "+anyFraction)
		}
		return strings.Join(alts, " | "), len(alts) > 0
	}
	hiI, hf := decimal(hi.v)
	switch {
	case li == hiI:
		add(`"`+strconv.FormatInt(li, 10)+`"`, between(lf, hf, lo.ex, hi.ex))
	case li < hiI:
		add(`"`+strconv.FormatInt(li, 10)+`"`, ge(lf, lo.ex))
		if li+1 <= hiI-1 {
			alts = append(alts, "("+digitsRange(li+1, hiI-1)+") "+anyFraction)
		}
		add(`"`+strconv.FormatInt(hiI, 10)+`"`, le(hf, hi.ex))
	}
	return strings.Join(alts, " | "), len(alts) > 0
}

// decimal splits a non-negative value with a finite decimal expansion (as
// JSON numbers have, within the checked limits) into its integer part and
// fraction digits, without trailing zeros.
func decimal(r *big.Rat) (int64, string) {
	s := r.FloatString(maxFractionDigits)
	i, f, _ := strings.Cut(s, ".")
	n, _ := strconv.ParseInt(i, 10, 64)
	return n, strings.TrimRight(f, "0")
}

// maxFractionDigits bounds the digits of a bound's fraction.
const maxFractionDigits = 30

// exactDecimal reports whether r has at most maxFractionDigits fraction digits.
func exactDecimal(r *big.Rat) bool {
	scaled := new(big.Rat).Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(maxFractionDigits), nil)))
	return scaled.IsInt()
}

// frac describes the fraction digit strings d allowed after an integer
// part: ne matches the non-empty ones ("" if none), empty whether there
// may be no fraction at all.
type frac struct {
	ne    string
	empty bool
}

// after returns the integer part followed by an allowed fraction.
func (f frac) after(intPart string) (string, bool) {
	switch {
	case f.ne == "" && !f.empty:
		return "", false
	case f.ne == "":
		return intPart, true
	case f.empty:
		return intPart + ` ("." (` + f.ne + `))?`, true
	}
	return intPart + ` "." (` + f.ne + `)`, true
}

// prefixed is the strings of f after digit c.
func (f frac) prefixed(c byte) (string, bool) {
	switch {
	case f.ne == "" && !f.empty:
		return "", false
	case f.ne == "":
		return `"` + string(c) + `"`, true
	case f.empty:
		return `"` + string(c) + `" (` + f.ne + `)?`, true
	}
	return `"` + string(c) + `" (` + f.ne + `)`, true
}

func allZeros(s string) bool { return strings.Trim(s, "0") == "" }

func head(s string) (byte, string) {
	if s == "" {
		return '0', ""
	}
	return s[0], s[1:]
}

// ge: 0.d >= 0.a (> with ex).
func ge(a string, ex bool) frac {
	if allZeros(a) {
		if ex {
			return frac{ne: `"0"{0,15} [1-9] [0-9]{0,15}`}
		}
		return frac{ne: `[0-9]{1,15}`, empty: true}
	}
	c, rest := head(a)
	var alts []string
	if c < '9' {
		alts = append(alts, digitClass(c+1, '9')+` [0-9]{0,15}`)
	}
	if e, ok := ge(rest, ex).prefixed(c); ok {
		alts = append(alts, e)
	}
	return frac{ne: strings.Join(alts, " | ")}
}

// le: 0.d <= 0.a (< with ex).
func le(a string, ex bool) frac {
	if allZeros(a) {
		if ex {
			return frac{}
		}
		return frac{ne: `"0"{1,15}`, empty: true}
	}
	c, rest := head(a)
	var alts []string
	if c > '0' {
		alts = append(alts, digitClass('0', c-1)+` [0-9]{0,15}`)
	}
	if e, ok := le(rest, ex).prefixed(c); ok {
		alts = append(alts, e)
	}
	return frac{ne: strings.Join(alts, " | "), empty: true}
}

// between: 0.a <= 0.d <= 0.b, a <= b, each bound excluded with its flag.
func between(a, b string, aEx, bEx bool) frac {
	if allZeros(a) && allZeros(b) {
		if aEx || bEx {
			return frac{}
		}
		return frac{ne: `"0"{1,15}`, empty: true}
	}
	ca, ra := head(a)
	cb, rb := head(b)
	var alts []string
	if ca == cb {
		if e, ok := between(ra, rb, aEx, bEx).prefixed(ca); ok {
			alts = append(alts, e)
		}
	} else {
		if e, ok := ge(ra, aEx).prefixed(ca); ok {
			alts = append(alts, e)
		}
		if ca+1 <= cb-1 {
			alts = append(alts, digitClass(ca+1, cb-1)+` [0-9]{0,15}`)
		}
		if e, ok := le(rb, bEx).prefixed(cb); ok {
			alts = append(alts, e)
		}
	}
	return frac{ne: strings.Join(alts, " | "), empty: allZeros(a) && !aEx}
}
