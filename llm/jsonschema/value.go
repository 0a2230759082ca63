package jsonschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"unicode/utf8"
)

// object is a JSON object that keeps its keys in document order: the
// grammar lists properties in the order the schema gives them, as
// llama.cpp's converter does.
type object struct {
	keys []string
	vals map[string]any
}

func (o *object) get(k string) (any, bool) {
	v, ok := o.vals[k]
	return v, ok
}

func (o *object) has(k string) bool { _, ok := o.vals[k]; return ok }

func (o *object) set(k string, v any) {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

func (o *object) without(keys ...string) *object {
	out := &object{vals: make(map[string]any, len(o.vals))}
	for _, k := range o.keys {
		if !slices.Contains(keys, k) {
			out.set(k, o.vals[k])
		}
	}
	return out
}

func newObject() *object { return &object{vals: map[string]any{}} }

// maxNesting bounds the depth of a schema document, so that a hostile one
// cannot exhaust the stack.
const maxNesting = 128

// decode parses one JSON document into *object, []any, string,
// json.Number, bool and nil values.
func decode(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := decodeValue(d, 0)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("text after the schema's JSON value")
	}
	return v, nil
}

func decodeValue(d *json.Decoder, depth int) (any, error) {
	if depth > maxNesting {
		return nil, fmt.Errorf("nested deeper than %d levels", maxNesting)
	}
	tok, err := d.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch delim {
	case '{':
		o := newObject()
		for d.More() {
			kt, err := d.Token()
			if err != nil {
				return nil, err
			}
			k := kt.(string) // the decoder only yields string keys
			if o.has(k) {
				return nil, fmt.Errorf("duplicate key %q", k)
			}
			v, err := decodeValue(d, depth+1)
			if err != nil {
				return nil, err
			}
			o.set(k, v)
		}
		_, err := d.Token()
		return o, err
	case '[':
		a := []any{}
		for d.More() {
			v, err := decodeValue(d, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := d.Token()
		return a, err
	}
	return nil, fmt.Errorf("unexpected %v", delim)
}

// encode writes v as compact JSON; with canonical set, object keys are
// sorted and numbers normalised, so that equal JSON values encode alike.
func encode(v any, canonical bool) string {
	var b strings.Builder
	encodeTo(&b, v, canonical)
	return b.String()
}

func encodeTo(b *strings.Builder, v any, canonical bool) {
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		if v {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case json.Number:
		if r, ok := rat(v); ok && canonical {
			b.WriteString(r.RatString())
		} else {
			b.WriteString(string(v))
		}
	case string:
		quoteJSON(b, v)
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			encodeTo(b, e, canonical)
		}
		b.WriteByte(']')
	case *object:
		keys := v.keys
		if canonical {
			keys = slices.Sorted(slices.Values(keys))
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			quoteJSON(b, k)
			b.WriteByte(':')
			encodeTo(b, v.vals[k], canonical)
		}
		b.WriteByte('}')
	}
}

// quoteJSON writes s as a JSON string, escaping only what JSON requires.
func quoteJSON(b *strings.Builder, s string) {
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
		case r < 0x20:
			fmt.Fprintf(b, `\u%04x`, r)
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// rat returns the exact value of a JSON number.
func rat(n json.Number) (*big.Rat, bool) {
	return new(big.Rat).SetString(string(n))
}

// kindOf names the JSON type of a decoded value, "integer" for integral
// numbers.
func kindOf(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		if r, ok := rat(v); ok && r.IsInt() {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case *object:
		return "object"
	}
	return ""
}
