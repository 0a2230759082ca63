package jsonschema

import (
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// maxRepeat bounds minItems, maxItems, minLength and maxLength: llama.cpp
// expands a repetition into one rule per count, so larger bounds would
// cost memory and time in every request.
const maxRepeat = 1000

// annotations are keywords that never constrain a value, or that only
// matter where the converter resolves them itself ($defs).
var annotations = map[string]bool{
	"$schema": true, "$id": true, "$comment": true, "$anchor": true, "$vocabulary": true,
	"$dynamicAnchor": true, "$recursiveAnchor": true, "$defs": true, "definitions": true,
	"title": true, "description": true, "default": true, "examples": true, "deprecated": true,
	"readOnly": true, "writeOnly": true, "contentEncoding": true, "contentMediaType": true,
	"contentSchema": true,
}

// unsupported are JSON Schema's assertion keywords a grammar here cannot
// enforce, with the reason given to the caller.
var unsupported = map[string]string{
	"not":                   "negation cannot be expressed in a grammar",
	"if":                    "conditional schemas are not supported",
	"then":                  "conditional schemas are not supported",
	"else":                  "conditional schemas are not supported",
	"dependentSchemas":      "dependencies between properties are not supported",
	"dependentRequired":     "dependencies between properties are not supported",
	"dependencies":          "dependencies between properties are not supported",
	"patternProperties":     "property name patterns are not supported",
	"propertyNames":         "property name schemas are not supported",
	"unevaluatedProperties": "unevaluated properties are not supported",
	"unevaluatedItems":      "unevaluated items are not supported",
	"contains":              "contains is not supported",
	"minContains":           "contains is not supported",
	"maxContains":           "contains is not supported",
	"minProperties":         "property counts are not supported",
	"maxProperties":         "property counts are not supported",
	"multipleOf":            "multipleOf is not supported",
	"$dynamicRef":           "dynamic references are not supported",
	"$recursiveRef":         "recursive references are not supported: use $ref",
}

// assertion reports whether keyword k constrains values.
func assertion(k string) bool {
	if annotations[k] {
		return false
	}
	_, known := handled[k]
	_, refused := unsupported[k]
	return known || refused
}

// handled are the keywords the converter enforces.
var handled = map[string]bool{
	"type": true, "enum": true, "const": true, "properties": true, "required": true,
	"additionalProperties": true, "items": true, "prefixItems": true, "additionalItems": true,
	"minItems": true, "maxItems": true, "minLength": true, "maxLength": true, "minimum": true,
	"maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true, "anyOf": true,
	"oneOf": true, "allOf": true, "$ref": true, "format": true, "uniqueItems": true, "pattern": true,
}

var types = []string{"null", "boolean", "object", "array", "number", "integer", "string"}

// converter turns one schema document into rules.
type converter struct {
	rules map[string]string
	root  any               // the document, for $ref
	refs  map[string]string // $ref -> its rule
	depth int

	// nested counts the objects and arrays entered; open holds it for
	// each $ref being converted, to find one that refers to itself
	// without a value in between: a left-recursive rule, which matches
	// nothing and which llama.cpp refuses.
	nested int
	open   map[string]int
}

func (c *converter) errorf(ptr, keyword string, sentinel error, format string, args ...any) error {
	return &Error{Pointer: ptr, Keyword: keyword, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

func (c *converter) add(hint, body string) string { return addRule(c.rules, hint, body) }

func (c *converter) prim(name string) string { return addPrimitive(c.rules, name) }

func join(name, part string) string {
	if name == "" {
		return part
	}
	return name + "-" + part
}

func pointer(ptr string, parts ...any) string {
	for _, p := range parts {
		s := fmt.Sprint(p)
		ptr += "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
	}
	return ptr
}

// visit adds the rules matching the values valid against s and returns the
// name of its rule. ptr is s's JSON pointer, for errors; name a hint for
// rule names.
func (c *converter) visit(s any, ptr, name string) (string, error) {
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > maxNesting {
		return "", c.errorf(ptr, "", ErrUnsupported, "schema nested deeper than %d levels", maxNesting)
	}
	switch v := s.(type) {
	case bool:
		if v {
			return c.prim("value"), nil
		}
		return "", c.errorf(ptr, "", ErrInvalid, "schema false matches no value")
	case *object:
		return c.visitObject(v, ptr, name)
	}
	return "", c.errorf(ptr, "", ErrInvalid, "a schema must be an object or a boolean, not %s", kindOf(s))
}

func (c *converter) visitObject(s *object, ptr, name string) (string, error) {
	if err := c.check(s, ptr); err != nil {
		return "", err
	}
	if ref, ok := s.get("$ref"); ok {
		if !hasAssertions(s, "$ref") {
			return c.ref(ref.(string), ptr)
		}
		merged, err := c.merge(ptr, s, nil)
		if err != nil {
			return "", err
		}
		return c.visit(merged, ptr, name)
	}
	if s.has("allOf") {
		merged, err := c.merge(ptr, s, nil)
		if err != nil {
			return "", err
		}
		return c.visit(merged, ptr, name)
	}
	if s.has("anyOf") || s.has("oneOf") {
		return c.union(s, ptr, name)
	}
	ts := typeList(s)
	if len(ts) > 1 {
		var alts []string
		for _, t := range ts {
			alt := s.without()
			alt.set("type", t)
			r, err := c.visit(alt, ptr, join(name, t))
			if err != nil {
				return "", err
			}
			alts = append(alts, r)
		}
		return c.add(name, strings.Join(alts, " | ")), nil
	}
	if s.has("const") || s.has("enum") {
		return c.constants(s, ptr, name)
	}
	kind := ""
	if len(ts) == 1 {
		kind = ts[0]
	} else {
		kind = inferKind(s)
	}
	switch kind {
	case "object":
		return c.object(s, ptr, name)
	case "array":
		return c.array(s, ptr, name)
	case "string":
		return c.str(s, ptr, name)
	case "integer", "number":
		return c.number(s, ptr, name, kind)
	case "boolean", "null":
		return c.prim(kind), nil
	}
	return c.prim("value"), nil
}

// typeList returns s's types, without duplicates.
func typeList(s *object) []string {
	switch t := s.vals["type"].(type) {
	case string:
		return []string{t}
	case []any:
		var out []string
		for _, e := range t {
			if !slices.Contains(out, e.(string)) {
				out = append(out, e.(string))
			}
		}
		return out
	}
	return nil
}

// inferKind picks the kind of value to generate for a schema without a
// type. Its keywords of other kinds do not apply to that value, so any
// choice is valid; llama.cpp's is followed.
func inferKind(s *object) string {
	switch {
	case len(s.keys) == 0:
		return "object"
	case s.has("properties") || s.has("required") || s.has("additionalProperties"):
		return "object"
	case s.has("items") || s.has("prefixItems") || s.has("minItems") || s.has("maxItems") || s.has("additionalItems"):
		return "array"
	case s.has("format") || s.has("minLength") || s.has("maxLength") || s.has("pattern"):
		return "string"
	case s.has("minimum") || s.has("maximum") || s.has("exclusiveMinimum") || s.has("exclusiveMaximum"):
		return "integer"
	}
	return ""
}

// hasAssertions reports whether s has assertion keywords besides those in except.
func hasAssertions(s *object, except ...string) bool {
	for _, k := range s.keys {
		if assertion(k) && !slices.Contains(except, k) {
			return true
		}
	}
	return false
}

// check refuses unsupported keywords and malformed values of the others.
func (c *converter) check(s *object, ptr string) error {
	for _, k := range s.keys {
		v := s.vals[k]
		if why, ok := unsupported[k]; ok {
			return c.errorf(ptr, k, ErrUnsupported, "%s", why)
		}
		bad := func(want string) error {
			return c.errorf(ptr, k, ErrInvalid, "must be %s, not %s", want, encodeShort(v))
		}
		switch k {
		case "$id":
			if ptr != "" {
				return c.errorf(ptr, k, ErrUnsupported, "$id in a subschema changes what its references point to; only a root $id is supported")
			}
		case "type":
			switch t := v.(type) {
			case string:
				if !slices.Contains(types, t) {
					return c.errorf(ptr, k, ErrInvalid, "unknown type %q: use one of %s", t, strings.Join(types, ", "))
				}
			case []any:
				if len(t) == 0 {
					return bad("a type or a non-empty array of types")
				}
				for _, e := range t {
					if es, ok := e.(string); !ok || !slices.Contains(types, es) {
						return c.errorf(ptr, k, ErrInvalid, "unknown type %s: use %s", encodeShort(e), strings.Join(types, ", "))
					}
				}
			default:
				return bad("a type name or an array of them")
			}
		case "properties":
			o, ok := v.(*object)
			if !ok {
				return bad("an object of schemas")
			}
			for _, pk := range o.keys {
				if !isSchema(o.vals[pk]) {
					return c.errorf(pointer(ptr, k, pk), "", ErrInvalid, "a schema must be an object or a boolean, not %s", kindOf(o.vals[pk]))
				}
			}
		case "required":
			a, ok := v.([]any)
			if !ok {
				return bad("an array of property names")
			}
			for _, e := range a {
				if _, ok := e.(string); !ok {
					return bad("an array of property names")
				}
			}
		case "additionalProperties", "additionalItems":
			if !isSchema(v) {
				return bad("a schema")
			}
		case "items":
			if a, ok := v.([]any); ok {
				for _, e := range a {
					if !isSchema(e) {
						return bad("a schema or an array of schemas")
					}
				}
			} else if !isSchema(v) {
				return bad("a schema")
			}
		case "prefixItems", "anyOf", "oneOf", "allOf":
			a, ok := v.([]any)
			if !ok || (len(a) == 0 && k != "prefixItems") {
				return bad("a non-empty array of schemas")
			}
			for _, e := range a {
				if !isSchema(e) {
					return bad("an array of schemas")
				}
			}
		case "enum":
			if a, ok := v.([]any); !ok || len(a) == 0 {
				return bad("a non-empty array")
			}
		case "minItems", "maxItems", "minLength", "maxLength":
			n, ok := v.(json.Number)
			if !ok {
				return bad("a non-negative integer")
			}
			i, err := strconv.ParseInt(string(n), 10, 64)
			if err != nil || i < 0 {
				if r, ok := rat(n); ok && r.IsInt() && r.Sign() > 0 {
					return c.errorf(ptr, k, ErrUnsupported, "%s is more than %d", n, maxRepeat)
				}
				return bad("a non-negative integer")
			}
			if i > maxRepeat {
				return c.errorf(ptr, k, ErrUnsupported, "%d is more than %d", i, maxRepeat)
			}
		case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum":
			if b, ok := v.(bool); ok && strings.HasPrefix(k, "exclusive") {
				return c.errorf(ptr, k, ErrUnsupported, "draft 4's boolean %s (%v) is not supported: give the bound as a number", k, b)
			}
			if _, ok := v.(json.Number); !ok {
				return bad("a number")
			}
		case "$ref", "format", "pattern":
			if _, ok := v.(string); !ok {
				return bad("a string")
			}
		case "uniqueItems":
			b, ok := v.(bool)
			if !ok {
				return bad("a boolean")
			}
			if b {
				return c.errorf(ptr, k, ErrUnsupported, "unique items cannot be enforced by a grammar")
			}
		}
	}
	return nil
}

func isSchema(v any) bool {
	switch v.(type) {
	case bool, *object:
		return true
	}
	return false
}

// encodeShort is v as JSON, cut for error messages.
func encodeShort(v any) string {
	s := encode(v, false)
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

// ref returns the rule of the schema ref points to, converting it once.
func (c *converter) ref(ref, ptr string) (string, error) {
	target, tptr, err := c.resolve(ref, ptr)
	if err != nil {
		return "", err
	}
	if name, ok := c.refs[tptr]; ok {
		if n, ok := c.open[tptr]; ok && n == c.nested {
			return "", c.errorf(ptr, "$ref", ErrInvalid, "%q refers back to itself with no object or array in between, so no value can match it", ref)
		}
		return name, nil
	}
	// Take the name first: the schema may refer to itself.
	hint := addRuleName("ref" + strings.ReplaceAll(tptr, "/", "-"))
	name := hint
	for i := 0; c.rules[name] != ""; i++ {
		name = hint + strconv.Itoa(i)
	}
	c.rules[name] = pending
	c.refs[tptr] = name
	if c.open == nil {
		c.open = map[string]int{}
	}
	c.open[tptr] = c.nested
	body, err := c.visit(target, tptr, name+"-def")
	delete(c.open, tptr)
	if err != nil {
		return "", err
	}
	c.rules[name] = body
	return name, nil
}

// addRuleName makes hint a valid rule name that is not a primitive's.
func addRuleName(hint string) string {
	name := invalidNameChars.ReplaceAllString(hint, "-")
	if len(name) > 48 {
		name = name[:48]
	}
	if name == "" || name == "root" || primitives[name] != "" {
		name += "-"
	}
	return name
}

// resolve returns the schema a local $ref points to, and its pointer.
func (c *converter) resolve(ref, ptr string) (any, string, error) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, "", c.errorf(ptr, "$ref", ErrUnsupported, "%q is not local: only references within the schema (#/...) are supported", ref)
	}
	frag, err := url.PathUnescape(frag)
	if err != nil {
		return nil, "", c.errorf(ptr, "$ref", ErrInvalid, "%q is not a valid URI fragment", ref)
	}
	if frag != "" && !strings.HasPrefix(frag, "/") {
		return nil, "", c.errorf(ptr, "$ref", ErrUnsupported, "%q: anchors are not supported, use a JSON pointer (#/$defs/...)", ref)
	}
	cur := c.root
	if frag != "" {
		for _, part := range strings.Split(frag[1:], "/") {
			part = strings.NewReplacer("~1", "/", "~0", "~").Replace(part)
			switch v := cur.(type) {
			case *object:
				cur, ok = v.get(part)
			case []any:
				i, err := strconv.Atoi(part)
				ok = err == nil && i >= 0 && i < len(v) && strconv.Itoa(i) == part
				if ok {
					cur = v[i]
				}
			default:
				ok = false
			}
			if !ok {
				return nil, "", c.errorf(ptr, "$ref", ErrInvalid, "%q points to nothing in the schema", ref)
			}
		}
	}
	if !isSchema(cur) {
		return nil, "", c.errorf(ptr, "$ref", ErrInvalid, "%q points to %s, not a schema", ref, kindOf(cur))
	}
	return cur, frag, nil
}

// constants converts const and enum: the values allowed, less those of
// another type than the schema's.
func (c *converter) constants(s *object, ptr, name string) (string, error) {
	for _, k := range s.keys {
		if assertion(k) && k != "const" && k != "enum" && k != "type" {
			return "", c.errorf(ptr, k, ErrUnsupported, "cannot be combined with const or enum")
		}
	}
	var values []any
	if v, ok := s.get("const"); ok {
		values = []any{v}
	} else {
		values = s.vals["enum"].([]any)
	}
	if e, ok := s.get("enum"); ok && s.has("const") {
		values = intersect(values, e.([]any))
	}
	ts := typeList(s)
	var lits []string
	seen := map[string]bool{}
	for _, v := range values {
		if len(ts) > 0 && !typeAllows(ts, v) {
			continue
		}
		key := encode(v, true)
		if seen[key] {
			continue
		}
		seen[key] = true
		lits = append(lits, Literal(encode(v, false)))
	}
	if len(lits) == 0 {
		return "", c.errorf(ptr, "enum", ErrInvalid, "no value of const or enum is of the type %s", strings.Join(ts, " or "))
	}
	c.prim("space")
	return c.add(name, "("+strings.Join(lits, " | ")+") space"), nil
}

func typeAllows(ts []string, v any) bool {
	k := kindOf(v)
	return slices.Contains(ts, k) || (k == "integer" && slices.Contains(ts, "number"))
}

// intersect returns the values of a that b holds too.
func intersect(a, b []any) []any {
	in := map[string]bool{}
	for _, v := range b {
		in[encode(v, true)] = true
	}
	var out []any
	for _, v := range a {
		if in[encode(v, true)] {
			out = append(out, v)
		}
	}
	return out
}

// formats are the string formats with a rule, by format name.
var formats = map[string]string{
	"date": "date-string", "time": "time-string", "date-time": "date-time-string",
	"uuid": "uuid", "uuid1": "uuid", "uuid2": "uuid", "uuid3": "uuid", "uuid4": "uuid", "uuid5": "uuid",
}

func (c *converter) str(s *object, ptr, name string) (string, error) {
	if pat, ok := s.get("pattern"); ok {
		for _, k := range []string{"format", "minLength", "maxLength"} {
			if s.has(k) {
				return "", c.errorf(ptr, k, ErrUnsupported, "cannot be combined with pattern")
			}
		}
		body, err := c.pattern(pat.(string), ptr)
		if err != nil {
			return "", err
		}
		return c.add(name, body), nil
	}
	if f, ok := s.get("format"); ok {
		rule, ok := formats[f.(string)]
		if !ok {
			return "", c.errorf(ptr, "format", ErrUnsupported, "format %q is not supported: use date, time, date-time or uuid, or drop the format", f)
		}
		for _, k := range []string{"minLength", "maxLength"} {
			if s.has(k) {
				return "", c.errorf(ptr, k, ErrUnsupported, "cannot be combined with format")
			}
		}
		return c.add(name, c.prim(rule)), nil
	}
	if !s.has("minLength") && !s.has("maxLength") {
		return c.prim("string"), nil
	}
	min, max := 0, -1
	if n, ok := s.get("minLength"); ok {
		min, _ = strconv.Atoi(string(n.(json.Number)))
	}
	if n, ok := s.get("maxLength"); ok {
		max, _ = strconv.Atoi(string(n.(json.Number)))
		if max < min {
			return "", c.errorf(ptr, "maxLength", ErrInvalid, "maxLength %d is less than minLength %d", max, min)
		}
	}
	c.prim("char")
	c.prim("space")
	chars := `""`
	if max != 0 {
		chars = repeat("char", min, max)
	}
	return c.add(name, `"\"" `+chars+` "\"" space`), nil
}

// boundLimit keeps integer bounds where their negation cannot overflow.
var boundLimit = big.NewRat(1e18, 1)

func (c *converter) number(s *object, ptr, name, kind string) (string, error) {
	var lo, hi bound
	for _, k := range []string{"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"} {
		v, ok := s.get(k)
		if !ok {
			continue
		}
		r, ok := rat(v.(json.Number))
		if !ok {
			return "", c.errorf(ptr, k, ErrInvalid, "%s is not a number", v)
		}
		if r.Cmp(boundLimit) > 0 || r.Cmp(new(big.Rat).Neg(boundLimit)) < 0 {
			return "", c.errorf(ptr, k, ErrUnsupported, "%s is beyond ±1e18", v)
		}
		if !exactDecimal(r) {
			return "", c.errorf(ptr, k, ErrUnsupported, "%s has more than %d decimals", v, maxFractionDigits)
		}
		b := bound{v: r, ex: strings.HasPrefix(k, "exclusive")}
		if kind == "integer" {
			// The integers within the bound: ceil or floor, one step in
			// for an exclusive bound that is an integer.
			switch k {
			case "minimum":
				b = bound{v: ceil(r)}
			case "exclusiveMinimum":
				b = bound{v: new(big.Rat).Add(floor(r), big.NewRat(1, 1))}
			case "maximum":
				b = bound{v: floor(r)}
			case "exclusiveMaximum":
				b = bound{v: new(big.Rat).Sub(ceil(r), big.NewRat(1, 1))}
			}
		}
		if strings.HasSuffix(k, "inimum") {
			if lo.v == nil || b.v.Cmp(lo.v) > 0 || (b.v.Cmp(lo.v) == 0 && b.ex) {
				lo = b
			}
		} else if hi.v == nil || b.v.Cmp(hi.v) < 0 || (b.v.Cmp(hi.v) == 0 && b.ex) {
			hi = b
		}
	}
	c.prim("space")
	if lo.v == nil && hi.v == nil {
		return c.prim(kind), nil
	}
	if lo.v != nil && hi.v != nil && (lo.v.Cmp(hi.v) > 0 || (lo.v.Cmp(hi.v) == 0 && (lo.ex || hi.ex))) {
		return "", c.errorf(ptr, "minimum", ErrInvalid, "no %s lies between the bounds", kind)
	}
	if kind == "number" {
		// Decimals without an exponent, so that the bounds can be checked
		// digit by digit.
		body, ok := decimalRange(lo, hi)
		if !ok {
			return "", c.errorf(ptr, "minimum", ErrInvalid, "no number lies between the bounds")
		}
		return c.add(name, "("+body+") space"), nil
	}
	toInt := func(b bound) *int64 {
		if b.v == nil {
			return nil
		}
		i := b.v.Num().Int64()
		return &i
	}
	return c.add(name, "("+intRange(toInt(lo), toInt(hi))+") space"), nil
}

func floor(r *big.Rat) *big.Rat {
	q := new(big.Int).Div(r.Num(), r.Denom()) // Euclidean: floor for a positive denominator
	return new(big.Rat).SetInt(q)
}

func ceil(r *big.Rat) *big.Rat {
	f := floor(r)
	if f.Cmp(r) != 0 {
		f.Add(f, big.NewRat(1, 1))
	}
	return f
}
