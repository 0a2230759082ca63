package jsonschema

import (
	"strconv"
	"strings"
)

// maxDigits is how many digits an integer without an upper bound may have,
// as llama.cpp's integral-part allows.
const maxDigits = 16

// intRange returns a GBNF expression matching the decimal integers from lo
// to hi (nil: unbounded), without leading zeros. lo <= hi when both are set.
func intRange(lo, hi *int64) string {
	switch {
	case lo != nil && hi != nil:
		l, h := *lo, *hi
		switch {
		case h < 0:
			return `"-" (` + digitsRange(-h, -l) + `)`
		case l < 0:
			return `"-" (` + digitsRange(1, -l) + `) | ` + digitsRange(0, h)
		default:
			return digitsRange(l, h)
		}
	case lo != nil:
		if *lo < 0 {
			return `"-" (` + digitsRange(1, -*lo) + `) | ` + digitsFrom(0)
		}
		return digitsFrom(*lo)
	case hi != nil:
		if *hi < 0 {
			return `"-" (` + digitsFrom(-*hi) + `)`
		}
		return `"-" [1-9] [0-9]{0,15} | ` + digitsRange(0, *hi)
	}
	return `"-"? ([0] | [1-9] [0-9]{0,15})`
}

// digitsFrom matches the integers from a >= 0 up, of at most maxDigits
// digits (or as many as a has).
func digitsFrom(a int64) string {
	s := strconv.FormatInt(a, 10)
	alts := []string{sameLength(s, strings.Repeat("9", len(s)))}
	if len(s) < maxDigits {
		alts = append(alts, `[1-9] `+repeatDigit(len(s), maxDigits-1))
	}
	return strings.Join(alts, " | ")
}

// digitsRange matches the integers from a to b, 0 <= a <= b.
func digitsRange(a, b int64) string {
	sa, sb := strconv.FormatInt(a, 10), strconv.FormatInt(b, 10)
	var alts []string
	for n := len(sa); n <= len(sb); n++ {
		lo, hi := "1"+strings.Repeat("0", n-1), strings.Repeat("9", n)
		if n == 1 {
			lo = "0"
		}
		if n == len(sa) {
			lo = sa
		}
		if n == len(sb) {
			hi = sb
		}
		alts = append(alts, sameLength(lo, hi))
	}
	return strings.Join(alts, " | ")
}

// sameLength matches the digit strings of len(a) from a to b, a <= b.
func sameLength(a, b string) string {
	i := 0
	for i < len(a) && a[i] == b[i] {
		i++
	}
	prefix := ""
	if i > 0 {
		prefix = `"` + a[:i] + `"`
	}
	if i == len(a) {
		return prefix
	}
	rest := len(a) - i - 1
	var alts []string
	if rest == 0 {
		alts = []string{digitClass(a[i], b[i])}
	} else {
		loAll0 := a[i+1:] == strings.Repeat("0", rest)
		hiAll9 := b[i+1:] == strings.Repeat("9", rest)
		from, to := a[i]+1, b[i]-1
		if loAll0 {
			from = a[i]
		} else {
			alts = append(alts, digitClass(a[i], a[i])+" ("+sameLength(a[i+1:], strings.Repeat("9", rest))+")")
		}
		if hiAll9 {
			to = b[i]
		}
		if from <= to {
			alts = append(alts, digitClass(from, to)+" "+repeatDigit(rest, rest))
		}
		if !hiAll9 {
			alts = append(alts, digitClass(b[i], b[i])+" ("+sameLength(strings.Repeat("0", rest), b[i+1:])+")")
		}
	}
	body := strings.Join(alts, " | ")
	if prefix == "" {
		return body
	}
	return prefix + " (" + body + ")"
}

func digitClass(from, to byte) string {
	if from == to {
		return "[" + string(from) + "]"
	}
	return "[" + string(from) + "-" + string(to) + "]"
}

// repeatDigit matches min to max digits.
func repeatDigit(min, max int) string {
	switch {
	case min == max && min == 1:
		return "[0-9]"
	case min == max:
		return "[0-9]{" + strconv.Itoa(min) + "}"
	}
	return "[0-9]{" + strconv.Itoa(min) + "," + strconv.Itoa(max) + "}"
}
