package jsonschema_test

import (
	"context"
	"errors"
	"testing"

	"github.com/memload/memload/llm"
	"github.com/memload/memload/llm/jsonschema"
)

// FuzzGrammar checks that no schema makes the converter panic, that every
// refusal matches a sentinel, and that llama.cpp accepts every grammar the
// converter returns.
func FuzzGrammar(f *testing.F) {
	for _, c := range loadCases(f) {
		f.Add([]byte(c.Schema))
	}
	for _, s := range []string{`{"not": {}}`, `{"$ref": "#"}`, `{"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}`,
		`{"allOf": [{"$ref": "#"}]}`, `{"properties": {"]\\-^[": {}}, "additionalProperties": {}}`, `{"const": "\u0000\"\\"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, schema []byte) {
		g, err := jsonschema.Grammar(schema)
		if err != nil {
			var e *jsonschema.Error
			if !errors.As(err, &e) || !(errors.Is(err, jsonschema.ErrUnsupported) || errors.Is(err, jsonschema.ErrInvalid)) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		m := tinyModel(t)
		if _, err := m.Chat(context.Background(), []llm.Message{{Role: llm.RoleUser, Content: "hi"}}, nil, func(o *llm.ChatOptions) {
			o.Grammar, o.MaxTokens, o.Temperature = g, 1, 0
		}); err != nil {
			t.Fatalf("llama.cpp refuses the grammar of %s: %v\n%s", schema, err, g)
		}
	})
}
