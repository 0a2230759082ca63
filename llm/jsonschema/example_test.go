package jsonschema_test

import (
	"encoding/json"
	"fmt"
	"log"
	"strings"

	"github.com/memload/memload/llm/jsonschema"
)

func ExampleGrammar() {
	g, err := jsonschema.Grammar([]byte(`{
		"type": "object",
		"properties": {"city": {"type": "string", "maxLength": 20}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
		"required": ["city"],
		"additionalProperties": false
	}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(g) // for llm.ChatOptions.Grammar

	_, err = jsonschema.Grammar([]byte(`{"type": "string", "format": "email"}`))
	fmt.Println(err)
	// Output:
	// root ::= schema
	// char ::= [ !#-\[\]-~\x80-\uD7FF\uE000-\U0010FFFF] | [\\] (["\\bfnrt] | "u" ([0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}))
	// schema ::= "{" space schema-city-kv ( "," space ( schema-days-kv ) )? "}" space
	// schema-city ::= "\"" (char){0,20} "\"" space
	// schema-city-kv ::= "\"city\"" space ":" space schema-city
	// schema-days ::= ([1-7]) space
	// schema-days-kv ::= "\"days\"" space ":" space schema-days
	// space ::= | " " | "\n"{1,2} [ \t]{0,20}
	// jsonschema: unsupported: keyword "format" at the root schema: format "email" is not supported: use date, time, date-time or uuid, or drop the format
}

// A grammar for tool calls as Hermes and Qwen models write them: one or
// more <tool_call> blocks, each naming a tool and giving arguments valid
// against that tool's parameters schema.
func ExampleBuilder() {
	tools := []struct {
		name       string
		parameters string
	}{
		{"get_weather", `{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}`},
		{"get_time", `{"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"], "additionalProperties": false}`},
	}
	var b jsonschema.Builder
	var calls []string
	for _, tool := range tools {
		args, err := b.Schema([]byte(tool.parameters))
		if err != nil {
			log.Fatalf("tool %s: %v", tool.name, err)
		}
		name, _ := json.Marshal(tool.name)
		open := jsonschema.Literal("<tool_call>\n{\"name\": " + string(name) + ", \"arguments\": ")
		calls = append(calls, b.Rule("call-"+tool.name, open+" "+args+" "+jsonschema.Literal("}\n</tool_call>")))
	}
	call := b.Rule("call", strings.Join(calls, " | "))
	// Parallel calls: one or more, a newline apart.
	g := b.Grammar(b.Rule("calls", call+" ("+jsonschema.Literal("\n")+" "+call+")*"))
	fmt.Print(g)
	// Output:
	// root ::= calls
	// call ::= call-get-weather | call-get-time
	// call-get-time ::= "<tool_call>\n{\"name\": \"get_time\", \"arguments\": " schema0 "}\n</tool_call>"
	// call-get-weather ::= "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": " schema "}\n</tool_call>"
	// calls ::= call ("\n" call)*
	// char ::= [ !#-\[\]-~\x80-\uD7FF\uE000-\U0010FFFF] | [\\] (["\\bfnrt] | "u" ([0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}))
	// schema ::= "{" space schema-city-kv "}" space
	// schema-city-kv ::= "\"city\"" space ":" space string
	// schema-zone ::= ("\"UTC\"" | "\"CET\"") space
	// schema-zone-kv ::= "\"zone\"" space ":" space schema-zone
	// schema0 ::= "{" space schema-zone-kv "}" space
	// space ::= | " " | "\n"{1,2} [ \t]{0,20}
	// string ::= "\"" char* "\"" space
}
