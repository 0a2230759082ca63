package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7/intrinsics"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// image is what the Dockerfile makes, as buildkit's own parser reads it.
type image struct {
	base       string            // FROM, with its build arguments expanded
	copies     map[string]string // source -> destination
	entrypoint []string          // exec form only
	labels     map[string]string
}

func parseDockerfile(src []byte) (*image, error) {
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, err
	}
	if len(stages) != 1 {
		return nil, fmt.Errorf("%d stages, want one: the zip's files go into the base as they are", len(stages))
	}
	args := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				args[kv.Key] = *kv.Value
			}
		}
	}
	img := &image{copies: map[string]string{}, labels: map[string]string{}}
	img.base = os.Expand(stages[0].BaseName, func(k string) string { return args[k] })
	for _, c := range stages[0].Commands {
		switch c := c.(type) {
		case *instructions.CopyCommand:
			if c.From != "" {
				return nil, fmt.Errorf("COPY --from=%s: the image carries the zip's files only", c.From)
			}
			for _, s := range c.SourcePaths {
				img.copies[s] = c.DestPath
			}
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				return nil, fmt.Errorf("ENTRYPOINT %v in shell form: a shell would stand between Lambda and the bootstrap", c.CmdLine)
			}
			img.entrypoint = c.CmdLine
		case *instructions.LabelCommand:
			for _, kv := range c.Labels {
				img.labels[kv.Key] = kv.Value
			}
		case *instructions.AddCommand:
			return nil, fmt.Errorf("ADD %v: use COPY", c.SourcePaths)
		}
	}
	return img, nil
}

// checkImage lists what is wrong with the Dockerfile against the zip's
// top-level entries (bootstrap, lib/): every one lands under /var/task
// where the zip would put it, nothing else does, and the entrypoint is
// the bootstrap.
func checkImage(src []byte, zipEntries []string) []string {
	img, err := parseDockerfile(src)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if !regexp.MustCompile(`^public\.ecr\.aws/lambda/provided:al2023@sha256:[0-9a-f]{64}$`).MatchString(img.base) {
		bad("FROM %s: want public.ecr.aws/lambda/provided:al2023 pinned by digest", img.base)
	}
	want := map[string]string{}
	for _, e := range zipEntries {
		want[e] = "/var/task/" + e
	}
	got := map[string]string{}
	for s, d := range img.copies {
		// COPY lib and COPY lib/ copy the same directory's contents.
		if !strings.HasSuffix(s, "/") && want[s+"/"] != "" {
			s += "/"
		}
		if strings.HasSuffix(s, "/") && !strings.HasSuffix(d, "/") {
			d += "/"
		}
		got[s] = d
	}
	if !reflect.DeepEqual(got, want) {
		bad("COPY %v, want the zip's layout %v", got, want)
	}
	if !slices.Equal(img.entrypoint, []string{"/var/task/bootstrap"}) {
		bad("ENTRYPOINT %q, want [\"/var/task/bootstrap\"]", img.entrypoint)
	}
	// The label lets Lambda snapshot a runtime that does not call
	// restore/next; this one does, and its hooks would be skipped.
	if v, ok := img.labels["com.amazonaws.lambda.feature.snapstart"]; ok {
		bad("LABEL com.amazonaws.lambda.feature.snapstart=%s: not needed, the bootstrap drives SnapStart's lifecycle", v)
	}
	return problems
}

// zipEntries lists the top-level entries of the unpacked zip in dir,
// directories with a trailing slash.
func zipEntries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		name := de.Name()
		if de.IsDir() {
			name += "/"
		}
		out = append(out, name)
	}
	return out
}

// TestDockerfile parses the Dockerfile with buildkit's parser and checks
// it against the layout of the zip that `make zip` builds: nothing here
// can pull the base or build the image.
func TestDockerfile(t *testing.T) {
	src, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	task := filepath.Dir(bootstrap(t))
	entries := zipEntries(t, task)
	if !slices.Equal(entries, []string{"bootstrap", "lib/"}) {
		t.Fatalf("the zip holds %v: update the Dockerfile and this test together", entries)
	}
	for _, p := range checkImage(src, entries) {
		t.Error(p)
	}
}

// TestDockerfileCatches feeds checkImage broken Dockerfiles.
func TestDockerfileCatches(t *testing.T) {
	src, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	entries := []string{"bootstrap", "lib/"}
	if p := checkImage(src, entries); len(p) != 0 {
		t.Fatalf("the Dockerfile itself: %v", p)
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"unpinned", "@sha256:", ":latest@sha256:", "pinned by digest"},
		{"no digest", "ARG BASE=public.ecr.aws/lambda/provided:al2023@sha256:", "ARG BASE=public.ecr.aws/lambda/provided:al2023 #", "pinned by digest"},
		{"another base", "BASE=public.ecr.aws/lambda/provided:al2023@", "BASE=public.ecr.aws/lambda/provided:al2@", "pinned by digest"},
		{"no lib", "COPY lib/ /var/task/lib/\n", "", "the zip's layout"},
		{"lib elsewhere", "COPY lib/ /var/task/lib/", "COPY lib/ /opt/lib/", "the zip's layout"},
		{"shell form", `ENTRYPOINT ["/var/task/bootstrap"]`, "ENTRYPOINT /var/task/bootstrap", "shell form"},
		{"wrong entrypoint", `ENTRYPOINT ["/var/task/bootstrap"]`, `ENTRYPOINT ["/lambda-entrypoint.sh"]`, "ENTRYPOINT"},
		{"label", "ENTRYPOINT", "LABEL com.amazonaws.lambda.feature.snapstart=\"Allow\"\nENTRYPOINT", "not needed"},
		{"two stages", "FROM ${BASE}", "FROM ${BASE} AS build\nRUN true\nFROM ${BASE}", "stages"},
	} {
		broken := strings.Replace(string(src), c.from, c.to, 1)
		if broken == string(src) {
			t.Fatalf("%s: %q is not in the Dockerfile", c.name, c.from)
		}
		if p := strings.Join(checkImage([]byte(broken), entries), "\n"); !strings.Contains(p, c.want) {
			t.Errorf("%s: problems %q, want one saying %q", c.name, p, c.want)
		}
	}
}

// deployImage resolves the image's template as deploy does. goformation
// (v7.14.9, the latest) has no SnapStart property on
// AWS::Serverless::Function, and refuses unknown ones: its typed parse
// gets the template without SnapStart, which the checks read from the
// resolved document.
func deployImage(tmpl []byte, params map[string]string) (*deployment, error) {
	raw, err := intrinsics.ProcessYAML(tmpl, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	props, _ := doc["Resources"].(map[string]any)["Chatbot"].(map[string]any)["Properties"].(map[string]any)
	snap, ok := props["SnapStart"]
	delete(props, "SnapStart")
	stripped, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	d, err := deploy(stripped, params)
	if err != nil || !ok {
		return d, err
	}
	if p, _ := d.path("Resources", "Chatbot", "Properties").(map[string]any); p != nil {
		p["SnapStart"] = snap
	}
	return d, nil
}

// checkImageTemplate lists what is wrong with template-image.yaml (tmpl)
// against template.yaml (zip): for each set of parameters, the image's
// function must be the zip's (environment, policy, Function URL, memory,
// timeout, architecture, alias, rules) but for its packaging: an image,
// snapshotted with SnapStart on published versions, without provisioned
// concurrency (SnapStart does not take it).
func checkImageTemplate(tmpl, zip []byte) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	const uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/chatbot:v1"
	for _, params := range []map[string]string{
		{},
		{"AuthType": "NONE", "ApiKeyParameter": "/chatbot/api-key", "CorsOrigins": "https://a.example,https://b.example", "Architecture": "arm64"},
		{"AuthType": "NONE", "ApiKeySecret": "chatbot-key", "MemorySize": "4096", "Repack": "false"},
	} {
		with := map[string]string{"ModelBucket": "models", "ModelKey": "r1-1.5b.gguf"}
		for k, v := range params {
			with[k] = v
		}
		zd, err := deploy(zip, with)
		if err != nil {
			return []string{"template.yaml: " + err.Error()}
		}
		with["ImageUri"] = uri
		d, err := deployImage(tmpl, with)
		if err != nil {
			return []string{"parse: " + err.Error()}
		}
		fn, err := d.tpl.GetServerlessFunctionWithName("Chatbot")
		if err != nil {
			return []string{err.Error()}
		}
		zfn, err := zd.tpl.GetServerlessFunctionWithName("Chatbot")
		if err != nil {
			return []string{"template.yaml: " + err.Error()}
		}
		s := func(p *string) string {
			if p == nil {
				return "<unset>"
			}
			return *p
		}
		for _, c := range []struct{ what, got, want string }{
			{"PackageType", s(fn.PackageType), "Image"},
			{"ImageUri", s(fn.ImageUri), uri},
			{"Runtime", s(fn.Runtime), "<unset>"},
			{"Handler", s(fn.Handler), "<unset>"},
			{"CodeUri", fmt.Sprint(fn.CodeUri), "<nil>"},
			{"SnapStart.ApplyOn", fmt.Sprint(d.path("Resources", "Chatbot", "Properties", "SnapStart", "ApplyOn")), "PublishedVersions"},
			{"AutoPublishAlias", s(fn.AutoPublishAlias), "live"},
			{"ProvisionedConcurrencyConfig", fmt.Sprint(fn.ProvisionedConcurrencyConfig), "<nil>"},
			{"Architectures", fmt.Sprint(fn.Architectures), fmt.Sprint(zfn.Architectures)},
			{"MemorySize", fmt.Sprint(*fn.MemorySize), fmt.Sprint(*zfn.MemorySize)},
			{"Timeout", fmt.Sprint(*fn.Timeout), fmt.Sprint(*zfn.Timeout)},
			{"Environment", fmt.Sprint(fn.Environment.Variables), fmt.Sprint(zfn.Environment.Variables)},
			{"FunctionUrlConfig", fmt.Sprint(d.path("Resources", "Chatbot", "Properties", "FunctionUrlConfig")),
				fmt.Sprint(zd.path("Resources", "Chatbot", "Properties", "FunctionUrlConfig"))},
			{"Rules", fmt.Sprint(d.path("Rules")), fmt.Sprint(zd.path("Rules"))},
		} {
			if c.got != c.want {
				bad("with %v: %s = %s, want %s", params, c.what, c.got, c.want)
			}
		}
		got, err := statements(d)
		want, zerr := statements(zd)
		if err != nil || zerr != nil || !reflect.DeepEqual(got, want) {
			bad("with %v: policy statements %v (%v), want the zip's %v (%v)", params, got, err, want, zerr)
		}
	}

	// The parameters: the zip's, with ImageUri for the code and without
	// ProvisionedConcurrency.
	d, err := deployImage(tmpl, map[string]string{"ModelBucket": "b", "ModelKey": "k", "ImageUri": uri})
	if err != nil {
		return append(problems, err.Error())
	}
	zd, err := deploy(zip, map[string]string{"ModelBucket": "b", "ModelKey": "k"})
	if err != nil {
		return append(problems, err.Error())
	}
	zps := paramStrings(zd.tpl.Parameters)
	delete(zps, "ProvisionedConcurrency")
	ps := paramStrings(d.tpl.Parameters)
	if p, ok := ps["ImageUri"]; !ok || !strings.HasPrefix(p, "Type:String") {
		bad("parameter ImageUri %s, want a String", p)
	}
	delete(ps, "ImageUri")
	for name, zp := range zps {
		if p := ps[name]; p != zp {
			bad("parameter %s: %s, want the zip's %s", name, p, zp)
		}
	}
	for name := range ps {
		if _, ok := zps[name]; !ok {
			bad("parameter %s is not the zip's", name)
		}
	}
	return problems
}

// paramStrings renders each parameter's type, default and bounds, for comparing.
func paramStrings[P any](ps map[string]P) map[string]string {
	out := map[string]string{}
	for k, p := range ps {
		v := reflect.ValueOf(p)
		var parts []string
		for _, f := range []string{"Type", "Default", "AllowedValues", "AllowedPattern", "MinValue", "MaxValue"} {
			fv := v.FieldByName(f)
			if !fv.IsValid() || fv.IsZero() {
				continue
			}
			if fv.Kind() == reflect.Pointer {
				fv = fv.Elem()
			}
			parts = append(parts, fmt.Sprintf("%s:%v", f, fv.Interface()))
		}
		out[k] = strings.Join(parts, " ")
	}
	return out
}

// TestImageTemplate parses template-image.yaml with goformation, as
// TestTemplate does template.yaml, and checks it against the zip's.
func TestImageTemplate(t *testing.T) {
	tmpl, err := os.ReadFile("template-image.yaml")
	if err != nil {
		t.Fatal(err)
	}
	zip, err := os.ReadFile("template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkImageTemplate(tmpl, zip) {
		t.Error(p)
	}
}

// TestImageTemplateCatches feeds checkImageTemplate broken copies.
func TestImageTemplateCatches(t *testing.T) {
	tmpl, err := os.ReadFile("template-image.yaml")
	if err != nil {
		t.Fatal(err)
	}
	zip, err := os.ReadFile("template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"no SnapStart", "      SnapStart:\n        ApplyOn: PublishedVersions\n", "", "SnapStart.ApplyOn"},
		{"SnapStart off", "ApplyOn: PublishedVersions", "ApplyOn: None", "SnapStart.ApplyOn"},
		{"no alias", "      AutoPublishAlias: live\n", "", "AutoPublishAlias"},
		{"a zip", "PackageType: Image", "PackageType: Zip", "PackageType"},
		{"buffered", "InvokeMode: RESPONSE_STREAM", "InvokeMode: BUFFERED", "FunctionUrlConfig"},
		{"another variable", "REPACK: !Ref Repack", "REPACK: \"true\"", "Environment"},
		{"a wider policy", "Action: [s3:GetObject, s3:GetObjectVersion]", "Action: [s3:GetObject, s3:GetObjectVersion, s3:ListBucket]", "policy statements"},
		{"another default", "    Default: 4096\n", "    Default: 2048\n", "parameter ContextSize"},
	} {
		broken := strings.Replace(string(tmpl), c.from, c.to, 1)
		if broken == string(tmpl) {
			t.Fatalf("%s: %q is not in template-image.yaml", c.name, c.from)
		}
		if p := strings.Join(checkImageTemplate([]byte(broken), zip), "\n"); !strings.Contains(p, c.want) {
			t.Errorf("%s: problems %q, want one saying %q", c.name, p, c.want)
		}
	}
}
