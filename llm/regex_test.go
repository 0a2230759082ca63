package llm

import (
	"regexp"
	"strings"
	"testing"
)

func TestECMAScript(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`<tool_call>`, `\x3Ctool\x5Fcall\x3E`},
		{`a{3}(a)`, `(?:a){3,3}(a)`},
		{`[TOOL_CALLS]`, `[\x41\x43\x4C\x4F\x53-\x54\x5F]`},
		{`\{\s*"name"`, `\x7B(?:[\x09-\x0A\x0C-\x0D\x20])*\x22name\x22`},
		{`[^"]+?x`, `(?:[^\x22])+?x`},
		{`a|bc`, `(?:a|bc)`},
		{`.`, `[^\n]`},
		{`(?s:.)`, `[\s\S]`},
		{`é`, `(?:é)`},
		{`(?P<x>a)\z`, `(a)$`},
	} {
		got, err := ecmaScript(c.in)
		if err != nil || got != c.want {
			t.Errorf("ecmaScript(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{`(?i)a`, `(?m)^a`, `[éà]`, `\pL`} {
		if got, err := ecmaScript(in); err == nil {
			t.Errorf("ecmaScript(%q) = %q, want an error", in, got)
		}
	}
	// What llama.cpp is given matches as the Go pattern does (both read
	// \xHH and these constructs alike).
	for _, p := range []string{`<tool_call>`, `\[TOOL_CALLS\]\s*(\[)`, `a{3}(a)`} {
		ecma, goSyntax, err := triggerPattern(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"x <tool_call>{", "[TOOL_CALLS] [{", "aaaa"} {
			g := regexp.MustCompile(`^(?:` + goSyntax + `)$`).FindStringSubmatchIndex(s)
			e := regexp.MustCompile(`^(?:` + strings.ReplaceAll(ecma, "(?:é)", "é") + `)$`).FindStringSubmatchIndex(s)
			if (g == nil) != (e == nil) || g != nil && g[2] != e[2] {
				t.Errorf("%q on %q: Go %v, ECMAScript form %v", p, s, g, e)
			}
		}
	}
}
