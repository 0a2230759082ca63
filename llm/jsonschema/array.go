package jsonschema

import (
	"encoding/json"
	"strconv"
	"strings"
)

func (c *converter) array(s *object, ptr, name string) (string, error) {
	c.nested++
	defer func() { c.nested-- }()
	var tuple []any
	var rest any = nil // nil: items beyond the tuple are unconstrained
	tuplePtr := "prefixItems"
	if p, ok := s.get("prefixItems"); ok {
		tuple = p.([]any)
		if it, ok := s.get("items"); ok {
			if _, isArray := it.([]any); isArray {
				return "", c.errorf(ptr, "items", ErrInvalid, "must be a schema when prefixItems is given")
			}
			rest = it
		}
	} else if it, ok := s.get("items"); ok {
		if a, isArray := it.([]any); isArray {
			// Draft 7's tuple form.
			tuple, tuplePtr = a, "items"
			rest, _ = s.get("additionalItems")
		} else {
			rest = it
		}
	}
	min, max := 0, -1
	if n, ok := s.get("minItems"); ok {
		min, _ = strconv.Atoi(string(n.(json.Number)))
	}
	if n, ok := s.get("maxItems"); ok {
		max, _ = strconv.Atoi(string(n.(json.Number)))
		if max < min {
			return "", c.errorf(ptr, "maxItems", ErrInvalid, "maxItems %d is less than minItems %d", max, min)
		}
	}
	var items []string
	for i, t := range tuple {
		if max >= 0 && i >= max {
			break // a shorter array is valid too
		}
		r, err := c.visit(t, pointer(ptr, tuplePtr, i), join(name, "tuple-"+strconv.Itoa(i)))
		if err != nil {
			return "", err
		}
		items = append(items, r)
	}
	// Items after the tuple, from lo to hi (-1: any number).
	lo, hi := max0(min-len(tuple)), -1
	if max >= 0 {
		hi = max0(max - len(tuple))
	}
	var item string
	switch {
	case rest == false:
		if lo > 0 {
			return "", c.errorf(ptr, "minItems", ErrInvalid, "minItems %d is more than the %d items allowed", min, len(tuple))
		}
		hi = 0
	case rest == nil && len(tuple) > 0:
		// llama.cpp generates the tuple alone; more only if minItems asks.
		hi = lo
		item = c.prim("value")
	case rest == nil:
		item = c.prim("value")
	default:
		var err error
		p := pointer(ptr, "items")
		if tuplePtr == "items" {
			p = pointer(ptr, "additionalItems")
		}
		if item, err = c.visit(rest, p, join(name, "item")); err != nil {
			return "", err
		}
	}
	c.prim("space")
	body := `"[" space ` + strings.Join(items, ` "," space `)
	if hi != 0 {
		if len(items) > 0 {
			body += " " + repeat(`"," space `+item, lo, hi)
		} else {
			body += " " + list(item, lo, hi)
		}
	}
	return c.add(name, body+` "]" space`), nil
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}

// repeat matches x from lo to hi times (hi -1: unbounded).
func repeat(x string, lo, hi int) string {
	x = "(" + x + ")"
	switch {
	case lo == 0 && hi == 1:
		return x + "?"
	case lo == 0 && hi < 0:
		return x + "*"
	case lo == 1 && hi < 0:
		return x + "+"
	case hi < 0:
		return x + "{" + strconv.Itoa(lo) + ",}"
	case lo == hi:
		return x + "{" + strconv.Itoa(lo) + "}"
	}
	return x + "{" + strconv.Itoa(lo) + "," + strconv.Itoa(hi) + "}"
}

// list matches lo to hi items separated by commas.
func list(item string, lo, hi int) string {
	if hi == 0 {
		return ""
	}
	next := -1
	if hi > 0 {
		next = hi - 1
	}
	body := item + " " + repeat(`"," space `+item, max0(lo-1), next)
	if lo == 0 {
		return "(" + body + ")?"
	}
	return body
}
