package jsonschema_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	validator "github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/memload/memload/llm/jsonschema"
)

// TestToolCallGrammar builds a grammar for parallel tool calls around
// several tools' parameter schemas, samples answers under it, and checks
// that each answer is a sequence of calls naming a tool, with arguments
// valid against that tool's schema.
func TestToolCallGrammar(t *testing.T) {
	m := tinyModel(t)
	tools := map[string]string{
		"get_weather": `{"type": "object", "properties": {"location": {"type": "string", "maxLength": 12}, "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit", null]}}, "required": ["location", "unit"], "additionalProperties": false}`,
		"book":        `{"type": "object", "properties": {"day": {"type": "string", "format": "date"}, "seats": {"type": "integer", "minimum": 1, "maximum": 8}}, "required": ["day"]}`,
		"no_args":     `{"type": "object", "properties": {}, "additionalProperties": false}`,
	}
	var b jsonschema.Builder
	validators := map[string]*validator.Schema{}
	var calls []string
	for name, params := range tools {
		args, err := b.Schema([]byte(params))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		validators[name] = compile(t, testCase{Schema: json.RawMessage(params)})
		quoted, _ := json.Marshal(name)
		calls = append(calls, b.Rule("call-"+name, jsonschema.Literal("<tool_call>\n{\"name\": "+string(quoted)+", \"arguments\": ")+" "+args+" "+jsonschema.Literal("}\n</tool_call>")))
	}
	call := b.Rule("call", strings.Join(calls, " | "))
	g := b.Grammar(b.Rule("calls", call+" ("+jsonschema.Literal("\n")+" "+call+")*"))

	block := regexp.MustCompile(`(?s)<tool_call>\n(.*?)\n</tool_call>`)
	finished, seen := 0, map[string]bool{}
	for s := range uint32(2 * *seeds) {
		answer, ok := sample(t, m, g, s+1)
		if !ok {
			continue
		}
		finished++
		if !utf8.ValidString(answer) {
			t.Logf("seed %d: llama.cpp let through invalid UTF-8 (see TestSampledAnswersValidate): %q", s+1, answer)
			continue
		}
		found := block.FindAllStringSubmatch(answer, -1)
		var whole []string
		for _, f := range found {
			whole = append(whole, f[0])
			var c struct {
				Name      string
				Arguments json.RawMessage
			}
			if err := json.Unmarshal([]byte(f[1]), &c); err != nil {
				t.Errorf("seed %d: call %q is not JSON: %v", s+1, f[1], err)
				continue
			}
			v := validators[c.Name]
			if v == nil {
				t.Errorf("seed %d: call of unknown tool %q", s+1, c.Name)
				continue
			}
			seen[c.Name] = true
			inst, err := validator.UnmarshalJSON(strings.NewReader(string(c.Arguments)))
			if err == nil {
				err = v.Validate(inst)
			}
			if err != nil {
				t.Errorf("seed %d: arguments %s of %s are invalid: %v", s+1, c.Arguments, c.Name, err)
			}
		}
		if len(found) == 0 || strings.Join(whole, "\n") != answer {
			t.Errorf("seed %d: answer %q is not a sequence of tool calls", s+1, answer)
		}
	}
	if finished < *seeds {
		t.Errorf("only %d of %d answers finished", finished, 2**seeds)
	}
	t.Logf("%d answers finished, calling %v", finished, seen)
}

// TestBuilderSchemaErrorLeavesBuilder checks that a refused schema adds no
// rules, and that rule names the Builder uses itself are not given away.
func TestBuilderSchemaErrorLeavesBuilder(t *testing.T) {
	var b jsonschema.Builder
	r, err := b.Schema([]byte(`{"type": "object", "properties": {"a": {"type": "string"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	before := b.Grammar(r)
	if _, err := b.Schema([]byte(`{"type": "object", "properties": {"x": {"type": "integer"}, "y": {"not": {}}}}`)); err == nil {
		t.Fatal("a schema with not was accepted")
	}
	if after := b.Grammar(r); after != before {
		t.Errorf("a refused schema changed the grammar:\n%s\nto\n%s", before, after)
	}
	for _, name := range []string{"root", "space", "string", "char", r} {
		if got := b.Rule(name, `"x"`); got == name {
			t.Errorf("Rule(%q) kept a name already in use", name)
		}
	}
	if got := b.Rule("my rule!", `"x"`); got != "my-rule-" {
		t.Errorf("Rule(%q) = %q, want a valid GBNF name", "my rule!", got)
	}
}
