package jsonschema

import (
	"fmt"
	"slices"
	"strings"
)

type property struct {
	name   string
	schema any
	ptr    string
}

func (c *converter) object(s *object, ptr, name string) (string, error) {
	c.nested++
	defer func() { c.nested-- }()
	props, _ := s.vals["properties"].(*object)
	ap, hasAP := s.get("additionalProperties")
	req, _ := s.vals["required"].([]any)
	if props == nil && len(req) == 0 && (!hasAP || ap == true) {
		return c.prim("object"), nil
	}
	undeclared := ap // the schema of a required property not declared
	if !hasAP {
		// llama.cpp's choice: no properties beyond those declared.
		ap, undeclared = false, true
	}
	required := map[string]bool{}
	for _, r := range req {
		required[r.(string)] = true
	}
	var all []property
	if props != nil {
		for _, k := range props.keys {
			all = append(all, property{k, props.vals[k], pointer(ptr, "properties", k)})
		}
	}
	// Required names the properties do not declare take
	// additionalProperties' schema.
	for _, r := range req {
		n := r.(string)
		if props != nil && props.has(n) || slices.ContainsFunc(all, func(p property) bool { return p.name == n }) {
			continue
		}
		if undeclared == false {
			return "", c.errorf(ptr, "required", ErrInvalid, "property %q is required but additionalProperties is false and properties does not declare it", n)
		}
		all = append(all, property{n, undeclared, pointer(ptr, "additionalProperties")})
	}
	c.prim("space")
	// A member rule for each property; extra is the one for keys beyond them.
	type member struct {
		hint, kv string
		extra    bool
	}
	var reqs, opt []member
	for _, p := range all {
		r, err := c.visit(p.schema, p.ptr, join(name, p.name))
		if err != nil {
			return "", err
		}
		m := member{hint: p.name, kv: c.add(join(name, p.name)+"-kv", Literal(encode(p.name, false))+` space ":" space `+r)}
		if required[p.name] {
			reqs = append(reqs, m)
		} else {
			opt = append(opt, m)
		}
	}
	if ap != false {
		var names []string
		for _, p := range all {
			names = append(names, p.name)
		}
		sub := join(name, "additional")
		value, err := c.visit(ap, pointer(ptr, "additionalProperties"), sub+"-value")
		if err != nil {
			return "", err
		}
		key := c.add(sub+"-k", c.otherKeys(names))
		opt = append(opt, member{hint: "additional", kv: c.add(sub+"-kv", key+` ":" space `+value), extra: true})
	}
	var body strings.Builder
	body.WriteString(`"{" space `)
	for i, m := range reqs {
		if i > 0 {
			body.WriteString(` "," space `)
		}
		body.WriteString(m.kv)
	}
	if len(opt) > 0 {
		// Each optional property may follow the ones before it, in order;
		// rest[i] matches what may follow once opt[i-1] is written.
		rest := make([]string, len(opt)+1)
		for i := len(opt) - 1; i >= 1; i-- {
			r := `( "," space ` + opt[i].kv + ` )?`
			if opt[i].extra {
				r = `( "," space ` + opt[i].kv + ` )*`
			}
			if rest[i+1] != "" {
				r += " " + rest[i+1]
			}
			rest[i] = c.add(join(name, opt[i].hint)+"-rest", r)
		}
		var alts []string
		for i, m := range opt {
			a := m.kv
			if m.extra {
				a += ` ( "," space ` + m.kv + ` )*`
			} else if i+1 < len(opt) {
				a += " " + rest[i+1]
			}
			alts = append(alts, a)
		}
		if len(reqs) > 0 {
			body.WriteString(` ( "," space ( ` + strings.Join(alts, " | ") + ` ) )?`)
		} else {
			body.WriteString(` ( ` + strings.Join(alts, " | ") + ` )?`)
		}
	}
	body.WriteString(` "}" space`)
	return c.add(name, body.String()), nil
}

// otherKeys returns a rule body matching a quoted key of key-chars that is
// none of names.
func (c *converter) otherKeys(names []string) string {
	c.prim("key-char")
	type node struct {
		next map[rune]*node
		end  bool
	}
	root := &node{next: map[rune]*node{}}
	for _, n := range names {
		cur := root
		producible := true
		for _, r := range n {
			if r == '"' || r == '\\' || r < 0x20 || r == 0x7f {
				// No other key can hold this character: no exclusion needed.
				producible = false
				break
			}
			nx := cur.next[r]
			if nx == nil {
				nx = &node{next: map[rune]*node{}}
				cur.next[r] = nx
			}
			cur = nx
		}
		if producible {
			cur.end = true
		}
	}
	var walk func(n *node) string
	walk = func(n *node) string {
		runes := slices.Sorted(func(yield func(rune) bool) {
			for r := range n.next {
				if !yield(r) {
					return
				}
			}
		})
		var alts []string
		var class strings.Builder
		for _, r := range runes {
			class.WriteString(classChar(r))
			alts = append(alts, "["+classChar(r)+"]"+group(walk(n.next[r]), n.next[r].end))
		}
		alts = append(alts, `[^"\\\x00-\x1F\x7F\uD800-\uDFFF\U00110000-\U003FFFFF`+class.String()+`] key-char*`)
		return strings.Join(alts, " | ")
	}
	c.prim("space")
	return `"\"" (` + walk(root) + `)` + optional(!root.end) + ` "\"" space`
}

// group returns " (body)" for a node: the key may go on; with end, it must.
func group(body string, end bool) string {
	return " (" + body + ")" + optional(!end)
}

func optional(b bool) string {
	if b {
		return "?"
	}
	return ""
}

// classChar escapes r for a GBNF character class.
func classChar(r rune) string {
	switch r {
	case ']', '[', '\\', '-', '^':
		return fmt.Sprintf(`\x%02X`, r)
	}
	return string(r)
}
