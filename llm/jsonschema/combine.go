package jsonschema

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// union converts anyOf and oneOf. Keywords beside them apply to every
// alternative, so they are merged into each; oneOf is accepted only when
// no value can match two of its alternatives, so that the one generated is
// the only one matched.
func (c *converter) union(s *object, ptr, name string) (string, error) {
	key := "anyOf"
	if s.has("oneOf") {
		if s.has("anyOf") {
			return "", c.errorf(ptr, "oneOf", ErrUnsupported, "oneOf beside anyOf is not supported: nest one in the other")
		}
		key = "oneOf"
	}
	alts := s.vals[key].([]any)
	siblings := s.without(key)
	if hasAssertions(siblings) {
		merged := make([]any, len(alts))
		for i, a := range alts {
			m, err := c.merge(pointer(ptr, key, i), siblings, a)
			if err != nil {
				return "", err
			}
			merged[i] = m
		}
		alts = merged
	}
	if key == "oneOf" {
		for i := range alts {
			for j := i + 1; j < len(alts); j++ {
				if !c.disjoint(alts[i], alts[j], 0) {
					return "", c.errorf(ptr, "oneOf", ErrUnsupported, "alternatives %d and %d may both match a value, which oneOf forbids: give them different types or a required property with different const values, or use anyOf", i, j)
				}
			}
		}
	}
	var rules []string
	for i, a := range alts {
		hint := join(name, strconv.Itoa(i))
		if name == "" {
			hint = "alternative-" + strconv.Itoa(i)
		}
		r, err := c.visit(a, pointer(ptr, key, i), hint)
		if err != nil {
			return "", err
		}
		rules = append(rules, r)
	}
	return c.add(name, strings.Join(rules, " | ")), nil
}

// merge returns one schema equivalent to s (its $ref and allOf resolved)
// together with extra, if not nil: what allOf means.
func (c *converter) merge(ptr string, s *object, extra any) (*object, error) {
	var parts []*object
	if err := c.flatten(ptr, s, &parts, 0); err != nil {
		return nil, err
	}
	if extra != nil {
		if err := c.flatten(ptr, extra, &parts, 0); err != nil {
			return nil, err
		}
	}
	out := newObject()
	for _, p := range parts {
		if err := c.mergeInto(ptr, out, p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// flatten appends the schemas whose conjunction s is, without $ref or allOf.
func (c *converter) flatten(ptr string, s any, parts *[]*object, depth int) error {
	if depth > 32 {
		return c.errorf(ptr, "allOf", ErrUnsupported, "references or allOf nested deeper than 32 levels")
	}
	switch v := s.(type) {
	case bool:
		if v {
			return nil
		}
		return c.errorf(ptr, "allOf", ErrInvalid, "a branch is the schema false, which matches no value")
	case *object:
		if err := c.check(v, ptr); err != nil {
			return err
		}
		if ref, ok := v.get("$ref"); ok {
			target, tptr, err := c.resolve(ref.(string), ptr)
			if err != nil {
				return err
			}
			if err := c.flatten(tptr, target, parts, depth+1); err != nil {
				return err
			}
		}
		if all, ok := v.get("allOf"); ok {
			for i, a := range all.([]any) {
				if err := c.flatten(pointer(ptr, "allOf", i), a, parts, depth+1); err != nil {
					return err
				}
			}
		}
		*parts = append(*parts, v.without("$ref", "allOf"))
		return nil
	}
	return c.errorf(ptr, "", ErrInvalid, "a schema must be an object or a boolean, not %s", kindOf(s))
}

// mergeInto adds the constraints of p to out.
func (c *converter) mergeInto(ptr string, out, p *object) error {
	// additionalProperties of one side applies to the other's properties.
	for _, pair := range [][2]*object{{out, p}, {p, out}} {
		x, y := pair[0], pair[1]
		if ap, ok := x.get("additionalProperties"); ok && ap != true {
			xp, _ := x.vals["properties"].(*object)
			for _, n := range propertyNames(y) {
				if xp == nil || !xp.has(n) {
					return c.errorf(ptr, "additionalProperties", ErrUnsupported, "in allOf, it would apply to property %q declared in another branch: declare it beside additionalProperties", n)
				}
			}
		}
	}
	for _, k := range p.keys {
		v := p.vals[k]
		if annotations[k] {
			continue
		}
		cur, ok := out.get(k)
		if !ok {
			out.set(k, v)
			continue
		}
		switch k {
		case "type":
			var both []any
			for _, t := range typeList(p) {
				for _, u := range typeList(out) {
					switch {
					case t == u:
						both = append(both, t)
					case t == "integer" && u == "number", t == "number" && u == "integer":
						both = append(both, "integer")
					}
				}
			}
			if len(both) == 0 {
				return c.errorf(ptr, "type", ErrInvalid, "allOf branches have no type in common")
			}
			out.set(k, both)
		case "properties":
			merged := cur.(*object).without()
			po := v.(*object)
			for _, n := range po.keys {
				if prev, ok := merged.get(n); ok {
					both := newObject()
					both.set("allOf", []any{prev, po.vals[n]})
					merged.set(n, both)
				} else {
					merged.set(n, po.vals[n])
				}
			}
			out.set(k, merged)
		case "required":
			req := slices.Clone(cur.([]any))
			for _, n := range v.([]any) {
				if !slices.Contains(req, n) {
					req = append(req, n)
				}
			}
			out.set(k, req)
		case "additionalProperties", "items", "additionalItems":
			if _, isArray := v.([]any); isArray {
				if encode(v, true) != encode(cur, true) {
					return c.errorf(ptr, k, ErrUnsupported, "different tuples in allOf branches are not supported")
				}
				continue
			}
			switch {
			case cur == false || v == false:
				out.set(k, false)
			case cur == true:
				out.set(k, v)
			case v == true:
			default:
				both := newObject()
				both.set("allOf", []any{cur, v})
				out.set(k, both)
			}
		case "minItems", "minLength", "minimum", "exclusiveMinimum":
			if cmpNumber(v, cur) > 0 {
				out.set(k, v)
			}
		case "maxItems", "maxLength", "maximum", "exclusiveMaximum":
			if cmpNumber(v, cur) < 0 {
				out.set(k, v)
			}
		case "enum":
			out.set(k, intersect(cur.([]any), v.([]any)))
			if len(out.vals[k].([]any)) == 0 {
				return c.errorf(ptr, "enum", ErrInvalid, "allOf branches have no enum value in common")
			}
		default:
			if encode(v, true) != encode(cur, true) {
				return c.errorf(ptr, k, ErrUnsupported, "different values in allOf branches cannot be combined")
			}
		}
	}
	return nil
}

func propertyNames(s *object) []string {
	var names []string
	if p, ok := s.vals["properties"].(*object); ok {
		names = append(names, p.keys...)
	}
	if r, ok := s.vals["required"].([]any); ok {
		for _, n := range r {
			if !slices.Contains(names, n.(string)) {
				names = append(names, n.(string))
			}
		}
	}
	return names
}

func cmpNumber(a, b any) int {
	ra, _ := rat(a.(json.Number))
	rb, _ := rat(b.(json.Number))
	if ra == nil || rb == nil {
		return 0
	}
	return ra.Cmp(rb)
}

// Kinds of JSON values, as bits; integers are numbers.
const (
	kNull = 1 << iota
	kBool
	kObject
	kArray
	kNumber
	kString
	kAll = kNull | kBool | kObject | kArray | kNumber | kString
)

func kindBit(t string) int {
	switch t {
	case "null":
		return kNull
	case "boolean":
		return kBool
	case "object":
		return kObject
	case "array":
		return kArray
	case "number", "integer":
		return kNumber
	case "string":
		return kString
	}
	return kAll
}

// kinds returns a superset of the kinds of values valid against s.
func (c *converter) kinds(s any, depth int) int {
	o, ok := s.(*object)
	if !ok {
		if s == false {
			return 0
		}
		return kAll
	}
	if depth > 16 {
		return kAll
	}
	k := kAll
	if ts := typeList(o); len(ts) > 0 {
		k = 0
		for _, t := range ts {
			k |= kindBit(t)
		}
	}
	if v, ok := o.get("const"); ok {
		k &= kindBit(kindOf(v))
	}
	if e, ok := o.vals["enum"].([]any); ok {
		ek := 0
		for _, v := range e {
			ek |= kindBit(kindOf(v))
		}
		k &= ek
	}
	if ref, ok := o.vals["$ref"].(string); ok {
		if t, _, err := c.resolve(ref, ""); err == nil {
			k &= c.kinds(t, depth+1)
		}
	}
	if all, ok := o.vals["allOf"].([]any); ok {
		for _, a := range all {
			k &= c.kinds(a, depth+1)
		}
	}
	for _, key := range []string{"anyOf", "oneOf"} {
		if alts, ok := o.vals[key].([]any); ok {
			ak := 0
			for _, a := range alts {
				ak |= c.kinds(a, depth+1)
			}
			k &= ak
		}
	}
	return k
}

// disjoint reports whether no value can be valid against both a and b.
// It may answer false for disjoint schemas, never true for overlapping ones.
func (c *converter) disjoint(a, b any, depth int) bool {
	if depth > 8 {
		return false
	}
	ka, kb := c.kinds(a, 0), c.kinds(b, 0)
	if ka&kb == 0 {
		return true
	}
	oa, ob := c.deref(a), c.deref(b)
	if oa == nil || ob == nil {
		return false
	}
	if va, vb := constValues(oa), constValues(ob); va != nil && vb != nil && len(intersect(va, vb)) == 0 {
		return true
	}
	if ka|kb != kObject {
		return false
	}
	pa, _ := oa.vals["properties"].(*object)
	pb, _ := ob.vals["properties"].(*object)
	ra, _ := oa.vals["required"].([]any)
	rb, _ := ob.vals["required"].([]any)
	if pa == nil || pb == nil {
		return false
	}
	for _, n := range ra {
		if !slices.Contains(rb, n) {
			continue
		}
		sa, okA := pa.get(n.(string))
		sb, okB := pb.get(n.(string))
		if okA && okB && c.disjoint(sa, sb, depth+1) {
			return true
		}
	}
	return false
}

// deref follows a schema's plain $refs; nil if it is not a plain object
// schema at the end.
func (c *converter) deref(s any) *object {
	for range 16 {
		o, ok := s.(*object)
		if !ok {
			return nil
		}
		ref, ok := o.vals["$ref"].(string)
		if !ok {
			if o.has("allOf") || o.has("anyOf") || o.has("oneOf") {
				return nil
			}
			return o
		}
		if hasAssertions(o, "$ref") {
			return nil
		}
		t, _, err := c.resolve(ref, "")
		if err != nil {
			return nil
		}
		s = t
	}
	return nil
}

// constValues returns the values a schema's const or enum allows, or nil.
func constValues(o *object) []any {
	if v, ok := o.get("const"); ok {
		return []any{v}
	}
	if e, ok := o.vals["enum"].([]any); ok {
		return e
	}
	return nil
}
