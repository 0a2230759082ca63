package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/intrinsics"
)

// deployment is what CloudFormation would make of template.yaml for some
// parameter values, as goformation parses and resolves it: the typed
// template, and the resolved document for the parts goformation has no
// types for (Rules, the Function URL's Cors).
type deployment struct {
	tpl *cloudformation.Template
	doc map[string]any
}

// pseudo are the pseudo parameters goformation does not resolve.
var pseudo = map[string]string{"AWS::Partition": "aws"}

// deploy resolves the template with params over the defaults. CloudFormation
// hands every parameter on as a string, even a Number; goformation unmarshals
// MemorySize and Timeout into ints, so those two stay numbers.
func deploy(tmpl []byte, params map[string]string) (*deployment, error) {
	raw, err := intrinsics.ProcessYAML(tmpl, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		return nil, err
	}
	var unresolved struct {
		Parameters map[string]struct{ Default any }
	}
	if err := json.Unmarshal(raw, &unresolved); err != nil {
		return nil, err
	}
	overrides := map[string]any{}
	for name, p := range unresolved.Parameters {
		if p.Default != nil {
			overrides[name] = fmt.Sprint(p.Default)
		}
	}
	for k, v := range params {
		overrides[k] = v
	}
	for _, k := range []string{"MemorySize", "Timeout"} {
		if s, ok := overrides[k].(string); ok {
			var n int
			fmt.Sscan(s, &n)
			overrides[k] = n
		}
	}
	ref := func(name string, input, template any) any {
		if s, ok := input.(string); ok && pseudo[s] != "" {
			return pseudo[s]
		}
		return intrinsics.Ref(name, input, template)
	}
	sub := func(name string, input, template any) any {
		if s, ok := input.(string); ok {
			for k, v := range pseudo {
				s = strings.ReplaceAll(s, "${"+k+"}", v)
			}
			input = s
		}
		return intrinsics.FnSub(name, input, template)
	}
	opts := &intrinsics.ProcessorOptions{
		ParameterOverrides:        overrides,
		EvaluateConditions:        true,
		IntrinsicHandlerOverrides: map[string]intrinsics.IntrinsicHandler{"Ref": ref, "Fn::Sub": sub},
	}
	tpl, err := goformation.ParseYAMLWithOptions(tmpl, opts)
	if err != nil {
		return nil, err
	}
	resolved, err := intrinsics.ProcessYAML(tmpl, opts)
	if err != nil {
		return nil, err
	}
	d := &deployment{tpl: tpl}
	return d, json.Unmarshal(resolved, &d.doc)
}

// path follows map keys and list indexes (as ints) through the resolved
// document.
func (d *deployment) path(keys ...any) any {
	var v any = d.doc
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// statements lists the function's policy statements as Action -> Resource
// (both as JSON), skipping the conditional documents that resolved to none.
func statements(d *deployment) (map[string]string, error) {
	fn, err := d.tpl.GetServerlessFunctionWithName("Chatbot")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if fn.Policies == nil || fn.Policies.IAMPolicyDocumentArray == nil {
		return out, nil
	}
	for _, doc := range *fn.Policies.IAMPolicyDocumentArray {
		for _, s := range doc.Statement {
			m, _ := s.(map[string]any)
			action, _ := json.Marshal(m["Action"])
			res, _ := json.Marshal(m["Resource"])
			if m["Condition"] != nil {
				c, _ := json.Marshal(m["Condition"])
				res = append(append(res, " if "...), c...)
			}
			out[string(action)] = string(res)
		}
	}
	return out, nil
}

// checkTemplate lists what is wrong with a template against what the
// function needs; TestTemplate wants none, TestTemplateCatches feeds it
// broken copies.
func checkTemplate(tmpl []byte) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	model := map[string]string{"ModelBucket": "models", "ModelKey": "r1-1.5b.gguf"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range model {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	d, err := deploy(tmpl, model)
	if err != nil {
		return []string{"parse: " + err.Error()}
	}
	fn, err := d.tpl.GetServerlessFunctionWithName("Chatbot")
	if err != nil {
		return []string{err.Error()}
	}
	str := func(p *string) string {
		if p == nil {
			return "<unset>"
		}
		return *p
	}
	for _, c := range []struct{ what, got, want string }{
		{"Runtime", str(fn.Runtime), "provided.al2023"},
		{"Handler", str(fn.Handler), "bootstrap"},
		{"CodeUri", fmt.Sprint(fn.CodeUri != nil && fn.CodeUri.String != nil && *fn.CodeUri.String == "../../dist/chatbot.zip"), "true"},
		{"Architectures", fmt.Sprint(fn.Architectures), "[x86_64]"},
		{"MemorySize", fmt.Sprint(fn.MemorySize != nil && *fn.MemorySize == 10240), "true"},
		{"Timeout", fmt.Sprint(fn.Timeout != nil && *fn.Timeout == 300), "true"},
		{"AutoPublishAlias", str(fn.AutoPublishAlias), "live"},
		{"ProvisionedConcurrencyConfig by default", fmt.Sprint(fn.ProvisionedConcurrencyConfig), "<nil>"},
	} {
		if c.got != c.want {
			bad("%s = %s, want %s", c.what, c.got, c.want)
		}
	}
	if u := fn.FunctionUrlConfig; u == nil {
		bad("no FunctionUrlConfig")
	} else {
		if u.AuthType != "AWS_IAM" {
			bad("FunctionUrlConfig.AuthType = %q by default, want AWS_IAM", u.AuthType)
		}
		if str(u.InvokeMode) != "RESPONSE_STREAM" {
			bad("FunctionUrlConfig.InvokeMode = %s, want RESPONSE_STREAM (the function streams through lambdaurl)", str(u.InvokeMode))
		}
	}
	if c := d.path("Resources", "Chatbot", "Properties", "FunctionUrlConfig", "Cors"); c != nil {
		bad("Cors = %v without CorsOrigins, want none", c)
	}
	// Read access to exactly the model object, nothing else by default.
	want := map[string]string{`["s3:GetObject","s3:GetObjectVersion"]`: `"arn:aws:s3:::models/r1-1.5b.gguf"`}
	if got, err := statements(d); err != nil || !reflect.DeepEqual(got, want) {
		bad("policy statements %v (%v), want %v", got, err, want)
	}
	env := map[string]string{}
	if fn.Environment != nil {
		env = fn.Environment.Variables
	}
	for k, v := range map[string]string{
		"MODEL_URI": "s3://models/r1-1.5b.gguf", "MODEL_SHA256": "", "CONTEXT_SIZE": "4096", "REPACK": "true", "MAX_TOKENS": "1024",
		"AUTH_TYPE": "AWS_IAM", "API_KEY_PARAMETER": "", "API_KEY_SECRET": "", "CORS_ALLOW_ORIGINS": "",
	} {
		if got, ok := env[k]; !ok || got != v {
			bad("environment %s = %q (set: %v), want %q", k, got, ok, v)
		}
	}

	// The parameters, as a deployer sees them.
	ps := d.tpl.Parameters
	for _, c := range []struct {
		name, typ string
		allowed   []any
	}{
		{"ModelBucket", "String", nil}, {"ModelKey", "String", nil}, {"ModelSha256", "String", nil},
		{"Architecture", "String", []any{"x86_64", "arm64"}}, {"MemorySize", "Number", nil}, {"Timeout", "Number", nil},
		{"ContextSize", "Number", nil}, {"MaxTokens", "Number", nil}, {"AuthType", "String", []any{"AWS_IAM", "NONE"}},
		{"ApiKeyParameter", "String", nil}, {"ApiKeySecret", "String", nil}, {"CorsOrigins", "String", nil},
		{"ProvisionedConcurrency", "Number", nil}, {"Repack", "String", []any{"true", "false"}},
	} {
		p, ok := ps[c.name]
		if !ok {
			bad("no parameter %s", c.name)
			continue
		}
		if p.Type != c.typ || (c.allowed != nil && !reflect.DeepEqual(p.AllowedValues, c.allowed)) {
			bad("parameter %s: type %s, allowed %v; want %s, %v", c.name, p.Type, p.AllowedValues, c.typ, c.allowed)
		}
	}
	if p := ps["MemorySize"]; p.MaxValue == nil || *p.MaxValue != 10240 || p.MinValue == nil || *p.MinValue < 128 {
		bad("MemorySize bounds %v..%v, want Lambda's, up to 10240", p.MinValue, p.MaxValue)
	}
	if p := ps["Timeout"]; p.MaxValue == nil || *p.MaxValue != 900 {
		bad("Timeout's MaxValue %v, want Lambda's 900", p.MaxValue)
	}

	// A public URL: an API key from SSM, CORS for two origins, two
	// environments kept warm.
	d, err = deploy(tmpl, with(map[string]string{"AuthType": "NONE", "ApiKeyParameter": "/chatbot/api-key",
		"CorsOrigins": "https://a.example,https://b.example", "ProvisionedConcurrency": "2", "Architecture": "arm64"}))
	if err != nil {
		return append(problems, "parse with AuthType NONE: "+err.Error())
	}
	fn, _ = d.tpl.GetServerlessFunctionWithName("Chatbot")
	if u := fn.FunctionUrlConfig; u == nil || u.AuthType != "NONE" {
		bad("AuthType=NONE does not reach FunctionUrlConfig: %+v", u)
	}
	if fmt.Sprint(fn.Architectures) != "[arm64]" {
		bad("Architecture=arm64 gives %v", fn.Architectures)
	}
	if pc := fn.ProvisionedConcurrencyConfig; pc == nil || pc.ProvisionedConcurrentExecutions != "2" || str(fn.AutoPublishAlias) == "<unset>" {
		bad("ProvisionedConcurrency=2 gives %+v on alias %s", pc, str(fn.AutoPublishAlias))
	}
	if got := d.path("Resources", "Chatbot", "Properties", "FunctionUrlConfig", "Cors", "AllowOrigins"); !reflect.DeepEqual(got, []any{"https://a.example", "https://b.example"}) {
		bad("Cors AllowOrigins = %v", got)
	}
	want = map[string]string{
		`["s3:GetObject","s3:GetObjectVersion"]`: `"arn:aws:s3:::models/r1-1.5b.gguf"`,
		`"ssm:GetParameter"`:                     `["arn:aws:ssm:us-east-1:123456789012:parameter//chatbot/api-key","arn:aws:ssm:us-east-1:123456789012:parameter/chatbot/api-key"]`,
		`"kms:Decrypt"`:                          `"*" if {"StringEquals":{"kms:ViaService":"ssm.us-east-1.amazonaws.com"}}`,
	}
	if got, err := statements(d); err != nil || !reflect.DeepEqual(got, want) {
		bad("policy statements with ApiKeyParameter:\n%v (%v)\nwant %v", got, err, want)
	}
	if e := fn.Environment.Variables; e["AUTH_TYPE"] != "NONE" || e["API_KEY_PARAMETER"] != "/chatbot/api-key" || e["CORS_ALLOW_ORIGINS"] != "https://a.example,https://b.example" {
		bad("environment %v", e)
	}

	d, err = deploy(tmpl, with(map[string]string{"AuthType": "NONE", "ApiKeySecret": "chatbot-key"}))
	if err != nil {
		return append(problems, "parse with ApiKeySecret: "+err.Error())
	}
	want = map[string]string{
		`["s3:GetObject","s3:GetObjectVersion"]`: `"arn:aws:s3:::models/r1-1.5b.gguf"`,
		`"secretsmanager:GetSecretValue"`:        `"arn:aws:secretsmanager:us-east-1:123456789012:secret:chatbot-key-??????"`,
	}
	if got, err := statements(d); err != nil || !reflect.DeepEqual(got, want) {
		bad("policy statements with ApiKeySecret:\n%v (%v)\nwant %v", got, err, want)
	}

	// The Rules block refuses a public URL without a key.
	for _, c := range []struct {
		params      map[string]string
		applies, ok bool
	}{
		{map[string]string{}, false, true},
		{map[string]string{"AuthType": "NONE"}, true, false},
		{map[string]string{"AuthType": "NONE", "ApiKeyParameter": "k"}, true, true},
		{map[string]string{"AuthType": "NONE", "ApiKeySecret": "k"}, true, true},
	} {
		d, err := deploy(tmpl, with(c.params))
		if err != nil {
			return append(problems, err.Error())
		}
		rule := []any{"Rules", "PublicUrlNeedsApiKey"}
		applies, ok := d.path(append(rule, "RuleCondition")...), d.path(append(rule, "Assertions", 0, "Assert")...)
		if applies != c.applies || (c.applies && ok != c.ok) {
			bad("rule PublicUrlNeedsApiKey with %v: applies %v, passes %v; want %v, %v", c.params, applies, ok, c.applies, c.ok)
		}
	}
	return problems
}

// TestTemplate parses template.yaml with goformation, a CloudFormation and
// SAM parser, resolves it for several sets of parameters and checks the
// function, its Function URL, its policy, its parameters and its rule.
func TestTemplate(t *testing.T) {
	tmpl, err := os.ReadFile("template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkTemplate(tmpl) {
		t.Error(p)
	}

	// Every variable the template sets is one the function reads.
	d, err := deploy(tmpl, map[string]string{"ModelBucket": "b", "ModelKey": "k"})
	if err != nil {
		t.Fatal(err)
	}
	fn, err := d.tpl.GetServerlessFunctionWithName("Chatbot")
	if err != nil {
		t.Fatal(err)
	}
	var read []string
	configFromEnv(func(k string) string {
		read = append(read, k)
		return map[string]string{"MODEL_URI": "s3://b/k"}[k]
	})
	for name := range fn.Environment.Variables {
		if !slices.Contains(read, name) {
			t.Errorf("the template sets %s, which the function does not read", name)
		}
	}
}

// TestTemplateCatches breaks the template in the ways that matter and
// checks that checkTemplate notices each.
func TestTemplateCatches(t *testing.T) {
	tmpl, err := os.ReadFile("template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, old, new, want string }{
		{"no InvokeMode (BUFFERED)", "        InvokeMode: RESPONSE_STREAM\n", "", "InvokeMode"},
		{"InvokeMode BUFFERED", "InvokeMode: RESPONSE_STREAM", "InvokeMode: BUFFERED", "InvokeMode"},
		{"no AuthType on the URL", "        AuthType: !Ref AuthType\n", "", "AuthType"},
		{"a public URL by default", "    Default: AWS_IAM\n", "    Default: NONE\n", "AuthType"},
		{"no rule for a public URL", "  PublicUrlNeedsApiKey:", "  SomethingElse:", "PublicUrlNeedsApiKey"},
		{"the whole bucket readable", `s3:::${ModelBucket}/${ModelKey}`, `s3:::${ModelBucket}/*`, "policy"},
		{"no arm64", "AllowedValues: [x86_64, arm64]", "AllowedValues: [x86_64]", "Architecture"},
		{"provisioned by default", "    Default: 0\n    MinValue: 0\n", "    Default: 1\n    MinValue: 0\n", "ProvisionedConcurrency"},
	} {
		t.Run(c.name, func(t *testing.T) {
			broken := bytes.Replace(tmpl, []byte(c.old), []byte(c.new), 1)
			if bytes.Equal(broken, tmpl) {
				t.Fatalf("template.yaml has no %q to change", c.old)
			}
			problems := checkTemplate(broken)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, c.want) }) {
				t.Fatalf("checkTemplate finds no problem about %s, only %q", c.want, problems)
			}
			t.Logf("found: %s", problems[0])
		})
	}
}
