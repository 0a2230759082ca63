package jsonschema_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/memload/memload/llm/jsonschema"
)

// TestRefusals checks that each keyword or form the grammar cannot enforce,
// and each malformed schema, gets an error matching its sentinel that names
// the keyword and where it sits.
func TestRefusals(t *testing.T) {
	for _, c := range []struct {
		schema  string
		want    error
		keyword string
		pointer string
	}{
		{`{"not": {"type": "string"}}`, jsonschema.ErrUnsupported, "not", ""},
		{`{"type": "object", "properties": {"a": {"type": "string", "pattern": "^(?=a)"}}}`, jsonschema.ErrUnsupported, "pattern", "/properties/a"},
		{`{"type": "string", "pattern": "\\bword"}`, jsonschema.ErrUnsupported, "pattern", ""},
		{`{"type": "string", "pattern": "(a)\\1"}`, jsonschema.ErrUnsupported, "pattern", ""},
		{`{"type": "string", "pattern": "\\p{L}"}`, jsonschema.ErrUnsupported, "pattern", ""},
		{`{"type": "string", "pattern": "a{2,1}"}`, jsonschema.ErrUnsupported, "pattern", ""},
		{`{"type": "string", "pattern": "a^b"}`, jsonschema.ErrUnsupported, "pattern", ""},
		{`{"type": "string", "pattern": "a$b"}`, jsonschema.ErrUnsupported, "pattern", ""},
		{`{"type": "string", "pattern": "a**"}`, jsonschema.ErrUnsupported, "pattern", ""},
		{`{"type": "string", "pattern": "(ab"}`, jsonschema.ErrInvalid, "pattern", ""},
		{`{"type": "string", "pattern": "ab)"}`, jsonschema.ErrInvalid, "pattern", ""},
		{`{"type": "string", "pattern": "[ab"}`, jsonschema.ErrInvalid, "pattern", ""},
		{`{"type": "string", "pattern": "[z-a]"}`, jsonschema.ErrInvalid, "pattern", ""},
		{`{"type": "string", "pattern": "^a", "maxLength": 3}`, jsonschema.ErrUnsupported, "maxLength", ""},
		{`{"type": "number", "multipleOf": 2}`, jsonschema.ErrUnsupported, "multipleOf", ""},
		{`{"type": "array", "items": {"type": "integer"}, "uniqueItems": true}`, jsonschema.ErrUnsupported, "uniqueItems", ""},
		{`{"if": {"type": "string"}, "then": {"maxLength": 2}}`, jsonschema.ErrUnsupported, "if", ""},
		{`{"type": "object", "properties": {"e": {"type": "string", "format": "email"}}}`, jsonschema.ErrUnsupported, "format", "/properties/e"},
		{`{"type": "object", "patternProperties": {"^x": {}}}`, jsonschema.ErrUnsupported, "patternProperties", ""},
		{`{"type": "object", "propertyNames": {"maxLength": 3}}`, jsonschema.ErrUnsupported, "propertyNames", ""},
		{`{"type": "object", "minProperties": 1}`, jsonschema.ErrUnsupported, "minProperties", ""},
		{`{"type": "object", "maxProperties": 1}`, jsonschema.ErrUnsupported, "maxProperties", ""},
		{`{"type": "array", "contains": {"type": "null"}}`, jsonschema.ErrUnsupported, "contains", ""},
		{`{"dependentRequired": {"a": ["b"]}}`, jsonschema.ErrUnsupported, "dependentRequired", ""},
		{`{"dependentSchemas": {"a": {}}}`, jsonschema.ErrUnsupported, "dependentSchemas", ""},
		{`{"type": "object", "unevaluatedProperties": false}`, jsonschema.ErrUnsupported, "unevaluatedProperties", ""},
		{`{"type": "array", "unevaluatedItems": false}`, jsonschema.ErrUnsupported, "unevaluatedItems", ""},
		{`{"$dynamicRef": "#node"}`, jsonschema.ErrUnsupported, "$dynamicRef", ""},
		{`{"$ref": "https://example.com/schema.json"}`, jsonschema.ErrUnsupported, "$ref", ""},
		{`{"$ref": "#node", "$defs": {"n": {"$anchor": "node"}}}`, jsonschema.ErrUnsupported, "$ref", ""},
		{`{"items": {"$id": "https://example.com/item", "type": "string"}}`, jsonschema.ErrUnsupported, "$id", "/items"},
		{`{"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}`, jsonschema.ErrUnsupported, "oneOf", ""},
		{`{"oneOf": [{"type": "integer"}, {"type": "number"}]}`, jsonschema.ErrUnsupported, "oneOf", ""},
		{`{"oneOf": [{"properties": {"k": {"const": 1}}, "required": ["k"]}, {"properties": {"k": {"const": 2}}, "required": ["k"]}]}`, jsonschema.ErrUnsupported, "oneOf", ""},
		{`{"type": "integer", "minimum": 1, "exclusiveMinimum": true}`, jsonschema.ErrUnsupported, "exclusiveMinimum", ""},
		{`{"type": "string", "maxLength": 100000}`, jsonschema.ErrUnsupported, "maxLength", ""},
		{`{"type": "array", "minItems": 1e30}`, jsonschema.ErrUnsupported, "minItems", ""},
		{`{"type": "integer", "maximum": 1e19}`, jsonschema.ErrUnsupported, "maximum", ""},
		{`{"type": "number", "minimum": 0.9, "maximum": 0.1}`, jsonschema.ErrInvalid, "minimum", ""},
		{`{"type": "number", "minimum": 0.5, "exclusiveMaximum": 0.5}`, jsonschema.ErrInvalid, "minimum", ""},
		{`{"type": "number", "minimum": 1e-40}`, jsonschema.ErrUnsupported, "minimum", ""},
		{`{"type": "integer", "minimum": 0.1, "maximum": 0.9}`, jsonschema.ErrInvalid, "minimum", ""},
		{`{"enum": ["a", "bb"], "maxLength": 1}`, jsonschema.ErrUnsupported, "maxLength", ""},
		{`{"type": "string", "format": "date", "maxLength": 4}`, jsonschema.ErrUnsupported, "maxLength", ""},
		{`{"allOf": [{"type": "object", "properties": {"a": {}}, "additionalProperties": false}, {"properties": {"b": {}}}]}`, jsonschema.ErrUnsupported, "additionalProperties", ""},
		{`{"allOf": [{"format": "date"}, {"format": "time"}]}`, jsonschema.ErrUnsupported, "format", ""},
		{`{"anyOf": [{"type": "string"}], "oneOf": [{"type": "string"}]}`, jsonschema.ErrUnsupported, "oneOf", ""},

		{`{"type": "kaboom"}`, jsonschema.ErrInvalid, "type", ""},
		{`{"type": 123}`, jsonschema.ErrInvalid, "type", ""},
		{`{"type": []}`, jsonschema.ErrInvalid, "type", ""},
		{`{"$ref": "#/$defs/missing"}`, jsonschema.ErrInvalid, "$ref", ""},
		{`{"$ref": "#/$defs/x", "$defs": {"x": 3}}`, jsonschema.ErrInvalid, "$ref", ""},
		{`{"type": "integer", "minimum": 5, "maximum": 4}`, jsonschema.ErrInvalid, "minimum", ""},
		{`{"type": "integer", "minimum": "1"}`, jsonschema.ErrInvalid, "minimum", ""},
		{`{"type": "string", "minLength": 3, "maxLength": 2}`, jsonschema.ErrInvalid, "maxLength", ""},
		{`{"type": "string", "minLength": -1}`, jsonschema.ErrInvalid, "minLength", ""},
		{`{"type": "array", "minItems": 1.5}`, jsonschema.ErrInvalid, "minItems", ""},
		{`{"items": {"type": "boolean"}, "minItems": 3, "maxItems": 2}`, jsonschema.ErrInvalid, "maxItems", ""},
		{`{"prefixItems": [{"type": "boolean"}], "items": false, "minItems": 2}`, jsonschema.ErrInvalid, "minItems", ""},
		{`{"properties": []}`, jsonschema.ErrInvalid, "properties", ""},
		{`{"properties": {"a": 1}}`, jsonschema.ErrInvalid, "", "/properties/a"},
		{`{"required": "a"}`, jsonschema.ErrInvalid, "required", ""},
		{`{"required": [1]}`, jsonschema.ErrInvalid, "required", ""},
		{`{"enum": []}`, jsonschema.ErrInvalid, "enum", ""},
		{`{"type": "string", "enum": [1, 2]}`, jsonschema.ErrInvalid, "enum", ""},
		{`{"anyOf": []}`, jsonschema.ErrInvalid, "anyOf", ""},
		{`{"allOf": [{"type": "string"}, {"type": "integer"}]}`, jsonschema.ErrInvalid, "type", ""},
		{`{"allOf": [{"enum": [1]}, {"enum": [2]}]}`, jsonschema.ErrInvalid, "enum", ""},
		{`{"type": "object", "required": ["x"], "additionalProperties": false}`, jsonschema.ErrInvalid, "required", ""},
		{`{"type": "object", "properties": {"a": false}, "required": ["a"]}`, jsonschema.ErrInvalid, "", "/properties/a"},
		{`{"items": {"type": "string", "maxLength": "3"}}`, jsonschema.ErrInvalid, "maxLength", "/items"},
		{`{"$defs": {"a": {"$ref": "#/$defs/a", "type": "string"}}, "$ref": "#/$defs/a", "minLength": 1}`, jsonschema.ErrUnsupported, "allOf", "/$defs/a"},
		{`false`, jsonschema.ErrInvalid, "", ""},
		{`[]`, jsonschema.ErrInvalid, "", ""},
		{`"string"`, jsonschema.ErrInvalid, "", ""},
		{`{"type": "string"`, jsonschema.ErrInvalid, "", ""},
		{`{"type": "string"} {}`, jsonschema.ErrInvalid, "", ""},
		{`{"type": "string", "type": "integer"}`, jsonschema.ErrInvalid, "", ""},
		{``, jsonschema.ErrInvalid, "", ""},
	} {
		t.Run(c.schema, func(t *testing.T) {
			g, err := jsonschema.Grammar([]byte(c.schema))
			var e *jsonschema.Error
			if !errors.Is(err, c.want) || !errors.As(err, &e) {
				t.Fatalf("error %v (grammar %q), want one matching %v", err, g, c.want)
			}
			if e.Keyword != c.keyword || e.Pointer != c.pointer {
				t.Errorf("error %q names keyword %q at %q, want %q at %q", err, e.Keyword, e.Pointer, c.keyword, c.pointer)
			}
			if c.keyword != "" && !strings.Contains(err.Error(), `"`+c.keyword+`"`) {
				t.Errorf("error %q does not name keyword %q", err, c.keyword)
			}
		})
	}
}
