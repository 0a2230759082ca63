package jsonschema

// primitives are the shared rules, by name. The whitespace rule is
// llama.cpp's: at most two newlines and twenty indenting characters, so
// that a model cannot run away in blanks. String characters exclude
// escaped UTF-16 surrogates, so that each character of the grammar is one
// character of the decoded string and minLength/maxLength hold exactly. Key
// characters (of keys beyond the declared properties) have no escapes, so
// that such a key cannot spell a declared property's name another way.
var primitives = map[string]string{
	"space":         `| " " | "\n"{1,2} [ \t]{0,20}`,
	"char":          `[ !#-\[\]-~\x80-\uD7FF\uE000-\U0010FFFF] | [\\] (["\\bfnrt] | "u" ([0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}))`,
	"key-char":      `[ !#-\[\]-~\x80-\uD7FF\uE000-\U0010FFFF]`,
	"string":        `"\"" char* "\"" space`,
	"integral-part": `[0] | [1-9] [0-9]{0,15}`,
	"decimal-part":  `[0-9]{1,16}`,
	"number":        `("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space`,
	"integer":       `("-"? integral-part) space`,
	"boolean":       `("true" | "false") space`,
	"null":          `"null" space`,
	"value":         `object | array | string | number | boolean | null`,
	"object":        `"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space`,
	"array":         `"[" space ( value ("," space value)* )? "]" space`,
	"uuid":          `"\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"" space`,
	// Days as each month has them, February to the 28th: every date the
	// rule admits exists.
	"date":             `[0-9]{4} "-" ( ("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01]) | ("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30") | "02" "-" ("0" [1-9] | "1" [0-9] | "2" [0-8]) )`,
	"time":             `([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )`,
	"date-time":        `date "T" time`,
	"date-string":      `"\"" date "\"" space`,
	"time-string":      `"\"" time "\"" space`,
	"date-time-string": `"\"" date-time "\"" space`,
}

// primitiveDeps lists the rules each primitive refers to.
var primitiveDeps = map[string][]string{
	"string":           {"char", "space"},
	"number":           {"integral-part", "decimal-part", "space"},
	"integer":          {"integral-part", "space"},
	"boolean":          {"space"},
	"null":             {"space"},
	"value":            {"object", "array", "string", "number", "boolean", "null"},
	"object":           {"space", "string", "value"},
	"array":            {"space", "value"},
	"uuid":             {"space"},
	"date-time":        {"date", "time"},
	"date-string":      {"date", "space"},
	"time-string":      {"time", "space"},
	"date-time-string": {"date-time", "space"},
}

// addPrimitive adds the primitive rule name and those it refers to.
func addPrimitive(rules map[string]string, name string) string {
	if _, ok := rules[name]; ok {
		return name
	}
	rules[name] = primitives[name]
	for _, dep := range primitiveDeps[name] {
		addPrimitive(rules, dep)
	}
	return name
}
