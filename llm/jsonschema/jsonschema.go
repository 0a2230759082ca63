// Package jsonschema converts JSON schemas to GBNF grammars, llama.cpp's
// format for [github.com/memload/memload/llm.ChatOptions], so that a model's answer is JSON
// valid against the schema. It follows the semantics of llama.cpp's
// converter (common/json-schema-to-grammar.cpp): optional whitespace as
// llama.cpp emits it, properties in schema order with the required ones
// first, no properties beyond those declared unless additionalProperties
// allows them, and an empty schema read as any object.
//
// Every value the grammar admits is valid against the schema. Where
// llama.cpp would let through values the schema refuses, the conversion
// fails instead: a keyword it cannot enforce (not, multipleOf, uniqueItems,
// if/then/else, an unknown format, a pattern with lookaround, ...) is an
// error matching
// [ErrUnsupported] that names the keyword and its JSON pointer. Keywords
// outside JSON Schema's vocabulary and annotations (title, description,
// default, examples, ...) are ignored, as validators ignore them.
//
// Within number ranges, numbers are generated as decimals without exponent
// and integers as integers; oneOf is accepted when its alternatives cannot overlap
// (different types, or a required property whose const or enum values
// differ); a pattern is translated when it uses regular expressions'
// common core (see the pattern keyword's errors for what is not).
package jsonschema

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var (
	// ErrUnsupported is matched by the error of a schema that uses a
	// keyword, or a form of one, that the grammar cannot enforce.
	ErrUnsupported = errors.New("jsonschema: unsupported")

	// ErrInvalid is matched by the error of a schema that is not valid
	// JSON Schema, or that no JSON value can satisfy.
	ErrInvalid = errors.New("jsonschema: invalid schema")
)

// Error describes a schema the converter refuses. It matches
// [ErrUnsupported] or [ErrInvalid] with [errors.Is].
type Error struct {
	Pointer string // JSON pointer of the schema holding the keyword ("" for the root)
	Keyword string // the keyword refused, if one is to blame
	Msg     string
	Err     error // ErrUnsupported or ErrInvalid
}

func (e *Error) Error() string {
	where := "the root schema"
	if e.Pointer != "" {
		where = strconv.Quote(e.Pointer)
	}
	if e.Keyword != "" {
		return fmt.Sprintf("%v: keyword %q at %s: %s", e.Err, e.Keyword, where, e.Msg)
	}
	return fmt.Sprintf("%v: at %s: %s", e.Err, where, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Grammar returns a GBNF grammar whose root rule matches one JSON value
// valid against schema, with optional whitespace as llama.cpp allows it.
func Grammar(schema []byte) (string, error) {
	var b Builder
	root, err := b.Schema(schema)
	if err != nil {
		return "", err
	}
	return b.Grammar(root), nil
}

// Builder composes a grammar from several schemas and rules of its own,
// such as tool calls wrapped in fixed text. The zero value is ready to use.
// Rule names are chosen by the Builder: use the names its methods return.
type Builder struct {
	rules map[string]string
}

// Schema adds the rules matching one JSON value valid against schema and
// returns the name of the rule to refer to it by. On error the Builder is
// unchanged.
func (b *Builder) Schema(schema []byte) (rule string, err error) {
	doc, err := decode(schema)
	if err != nil {
		return "", &Error{Msg: "not JSON: " + err.Error(), Err: ErrInvalid}
	}
	c := converter{rules: b.clone(), root: doc, refs: map[string]string{}}
	rule, err = c.visit(doc, "", "schema")
	if err != nil {
		return "", err
	}
	b.rules = c.rules
	return rule, nil
}

// Rule adds a rule with the given GBNF body, named after name (made a
// valid rule name, with a number added if a different rule has it), and
// returns its name. The body may refer to rules returned by the Builder's
// other calls, and hold literals made by [Literal].
func (b *Builder) Rule(name, body string) string {
	if b.rules == nil {
		b.rules = map[string]string{}
	}
	return addRule(b.rules, name, body)
}

// Grammar returns the grammar of all rules added, with root as its start.
func (b *Builder) Grammar(root string) string {
	var out strings.Builder
	fmt.Fprintf(&out, "root ::= %s\n", root)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range b.rules {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&out, "%s ::= %s\n", name, b.rules[name])
	}
	return out.String()
}

func (b *Builder) clone() map[string]string {
	m := make(map[string]string, len(b.rules))
	for k, v := range b.rules {
		m[k] = v
	}
	return m
}

// Literal returns s as a GBNF string literal, matching exactly s.
func Literal(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			// llama.cpp reads the grammar as a C string: no raw NUL.
			fmt.Fprintf(&b, `\x%02X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// pending marks a rule name taken before its body is known (a $ref being
// converted, which may refer to itself).
const pending = "\x00"

var invalidNameChars = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// addRule stores body under a free name derived from hint and returns the
// name; a rule with the same name and body is shared.
func addRule(rules map[string]string, hint, body string) string {
	name := invalidNameChars.ReplaceAllString(hint, "-")
	if len(name) > 48 {
		name = name[:48]
	}
	if name == "" || name == "root" || primitives[name] != "" {
		name += "-"
	}
	for i := -1; ; i++ {
		n := name
		if i >= 0 {
			n += strconv.Itoa(i)
		}
		if cur, ok := rules[n]; !ok || cur == body {
			rules[n] = body
			return n
		}
	}
}
