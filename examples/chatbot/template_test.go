package main

import (
	"os"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestTemplate checks the SAM template against what the function expects:
// the runtime, the streaming Function URL, and environment variables that
// the function actually reads.
func TestTemplate(t *testing.T) {
	b, err := os.ReadFile("template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	// get follows a path of mapping keys; CloudFormation's !Ref and !Sub
	// are tags on scalar nodes and keep their text.
	get := func(path ...string) *yaml.Node {
		t.Helper()
		n := doc.Content[0]
		for _, k := range path {
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == k {
					next = n.Content[i+1]
				}
			}
			if next == nil {
				t.Fatalf("template.yaml has no %v", path)
			}
			n = next
		}
		return n
	}
	fn := []string{"Resources", "Chatbot", "Properties"}
	for _, c := range []struct {
		path []string
		want string
	}{
		{append(fn, "Runtime"), "provided.al2023"},
		{append(fn, "Handler"), "bootstrap"},
		{append(fn, "CodeUri"), "../../dist/chatbot.zip"},
		{append(fn, "FunctionUrlConfig", "InvokeMode"), "RESPONSE_STREAM"},
		{append(fn, "FunctionUrlConfig", "AuthType"), "AuthType"},
		{[]string{"Parameters", "AuthType", "Default"}, "AWS_IAM"},
		{[]string{"Parameters", "MemorySize", "Default"}, "10240"},
		{[]string{"Parameters", "Architecture", "Default"}, "x86_64"},
	} {
		if got := get(c.path...).Value; got != c.want {
			t.Errorf("%v = %q, want %q", c.path, got, c.want)
		}
	}
	if archs := get("Parameters", "Architecture", "AllowedValues"); len(archs.Content) != 2 || archs.Content[0].Value != "x86_64" || archs.Content[1].Value != "arm64" {
		t.Errorf("Architecture's allowed values: %v", archs.Content)
	}

	var read []string
	configFromEnv(func(k string) string {
		read = append(read, k)
		return map[string]string{"MODEL_URI": "s3://b/k"}[k]
	})
	vars := get(append(fn, "Environment", "Variables")...)
	for i := 0; i < len(vars.Content); i += 2 {
		if name := vars.Content[i].Value; !slices.Contains(read, name) {
			t.Errorf("the template sets %s, which the function does not read", name)
		}
	}
	if got := get(append(fn, "Environment", "Variables", "MODEL_URI")...).Value; got != "s3://${ModelBucket}/${ModelKey}" {
		t.Errorf("MODEL_URI = %q", got)
	}
}
