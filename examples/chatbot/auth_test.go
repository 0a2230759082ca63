package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// awsStandIn stands in for SSM Parameter Store and Secrets Manager, which
// cannot run here: it speaks as much of their JSON protocol (a POST to /
// with X-Amz-Target, application/x-amz-json-1.1) as GetParameter and
// GetSecretValue need, and checks that each request is SigV4-signed for
// the right service.
type awsStandIn struct {
	params, secrets map[string]string
	mu              sync.Mutex
	calls           []string // target and name
}

func (a *awsStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name           string
		WithDecryption bool
		SecretId       string
	}
	json.NewDecoder(r.Body).Decode(&in)
	target := r.Header.Get("X-Amz-Target")
	a.mu.Lock()
	a.calls = append(a.calls, target+" "+in.Name+in.SecretId)
	a.mu.Unlock()
	fail := func(typ, msg string) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
	}
	service := map[string]string{"AmazonSSM.GetParameter": "ssm", "secretsmanager.GetSecretValue": "secretsmanager"}[target]
	if service == "" || !strings.Contains(r.Header.Get("Authorization"), "/us-east-1/"+service+"/aws4_request") {
		fail("InvalidSignatureException", "want a GetParameter or GetSecretValue request signed for its service, got "+target+" "+r.Header.Get("Authorization"))
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	switch service {
	case "ssm":
		v, ok := a.params[in.Name]
		if !ok {
			fail("ParameterNotFound", "")
			return
		}
		if !in.WithDecryption {
			v = "AQICAHencrypted" // what SSM returns for a SecureString without decryption
		}
		json.NewEncoder(w).Encode(map[string]any{"Parameter": map[string]any{"Name": in.Name, "Type": "SecureString", "Value": v, "Version": 1}})
	case "secretsmanager":
		v, ok := a.secrets[in.SecretId]
		if !ok {
			fail("ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:" + in.SecretId, "Name": in.SecretId, "SecretString": v, "VersionId": "v1"})
	}
}

// awsEnv points the AWS SDK at the stand-in, with test credentials.
func awsEnv(t *testing.T, a *awsStandIn) {
	t.Helper()
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_SSM": srv.URL, "AWS_ENDPOINT_URL_SECRETS_MANAGER": srv.URL,
		"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "",
		"AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	} {
		t.Setenv(k, v)
	}
}

const testKey = "sk-0123456789abcdef0123"

func TestAPIKeyAuth(t *testing.T) {
	a := &awsStandIn{params: map[string]string{"/chatbot/api-key": testKey + "\n"}, secrets: map[string]string{"chatbot-key": testKey}}
	awsEnv(t, a)
	for _, source := range []map[string]string{
		{"API_KEY_PARAMETER": "/chatbot/api-key"},
		{"API_KEY_SECRET": "chatbot-key"},
	} {
		t.Run(strings.Join(mapKeys(source), ""), func(t *testing.T) {
			env := map[string]string{"AUTH_TYPE": "NONE", "MODEL_NAME": "m"}
			for k, v := range source {
				env[k] = v
			}
			cfg := testConfig(t, env)
			key, err := fetchAPIKey(context.Background(), cfg)
			if err != nil || key != testKey {
				t.Fatalf("key %q, %v", key, err)
			}
			ts := newTestServer(t, cfg)
			ts.apiKey = key
			const body = `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}`
			for _, tc := range []struct {
				name, auth string
				status     int
				code       string
			}{
				{"no key", "", 401, "missing_api_key"},
				{"another scheme", "Basic " + testKey, 401, "missing_api_key"},
				{"wrong key", "Bearer sk-wrong", 401, "invalid_api_key"},
				{"the key with a character more", "Bearer " + testKey + "x", 401, "invalid_api_key"},
				{"the key", "Bearer " + testKey, 200, ""},
			} {
				req, _ := http.NewRequest(http.MethodPost, ts.url+"/v1/chat/completions", strings.NewReader(body))
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				e := decode[struct{ Error apiError }](t, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status || e.Error.Code != tc.code {
					t.Errorf("%s: %s %+v, want %d %s", tc.name, resp.Status, e.Error, tc.status, tc.code)
				}
				if tc.status == 401 && (resp.Header.Get("WWW-Authenticate") == "" || resp.Header.Get("X-Should-Retry") != "false" || e.Error.Type != "invalid_request_error") {
					t.Errorf("%s: headers %v, error %+v", tc.name, resp.Header, e.Error)
				}
			}
			// An OpenAI client sends the key already.
			var apiErr *openai.Error
			wrong := openai.NewClient(option.WithBaseURL(ts.url+"/v1/"), option.WithAPIKey("sk-nope"))
			right := openai.NewClient(option.WithBaseURL(ts.url+"/v1/"), option.WithAPIKey(testKey))
			if _, err := wrong.Models.List(context.Background()); !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
				t.Errorf("wrong key with the SDK: %v", err)
			}
			if page, err := right.Models.List(context.Background()); err != nil || len(page.Data) != 1 {
				t.Errorf("the key with the SDK: %+v %v", page, err)
			}
			// The page and /healthz stay open: the page asks for the key.
			resp, err := http.Get(ts.url + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			h := decode[healthAnswer](t, resp.Body)
			resp.Body.Close()
			if h.Auth != "api_key" {
				t.Errorf("healthz auth %q", h.Auth)
			}
		})
	}
	if len(a.calls) != 2 || a.calls[0] != "AmazonSSM.GetParameter /chatbot/api-key" || a.calls[1] != "secretsmanager.GetSecretValue chatbot-key" {
		t.Errorf("calls to the stand-in: %q", a.calls)
	}

	// Keys that cannot be read, or are too weak, stop the function.
	a.params["/short"] = "abc"
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"API_KEY_PARAMETER": "/missing"}, "reading the API key from SSM parameter /missing (API_KEY_PARAMETER): "},
		{map[string]string{"API_KEY_SECRET": "missing"}, "ResourceNotFoundException"},
		{map[string]string{"API_KEY_PARAMETER": "/short"}, "has 3 characters; use at least 16"},
	} {
		env := map[string]string{"AUTH_TYPE": "NONE"}
		for k, v := range tc.env {
			env[k] = v
		}
		if _, err := fetchAPIKey(context.Background(), testConfig(t, env)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.env, err, tc.want)
		}
	}
}

func TestAuthConfig(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"AUTH_TYPE": "NONE"}, "AUTH_TYPE=NONE without an API key: set API_KEY_PARAMETER"},
		{map[string]string{"AUTH_TYPE": "NONE", "API_KEY_PARAMETER": "p", "API_KEY_SECRET": "s"}, "both set: give one"},
		{map[string]string{"AUTH_TYPE": "none"}, `AUTH_TYPE="none": want AWS_IAM`},
	} {
		env := map[string]string{"MODEL_URI": "m.gguf"}
		for k, v := range tc.env {
			env[k] = v
		}
		if _, err := configFromEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.env, err, tc.want)
		}
	}
	cfg, err := configFromEnv(func(k string) string { return map[string]string{"MODEL_URI": "m.gguf"}[k] })
	if err != nil || cfg.AuthType != authIAM {
		t.Errorf("default auth %q, %v", cfg.AuthType, err)
	}
}

func mapKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestProcessAPIKey runs the bootstrap as a local server with
// AUTH_TYPE=NONE: at init it reads the key from the SSM stand-in, then
// answers 401 without it and 200 with it. With -log-json, as under
// Lambda, its cold start and answers are embedded-metric lines.
func TestProcessAPIKey(t *testing.T) {
	bin := bootstrap(t)
	a := &awsStandIn{params: map[string]string{"/chatbot/api-key": testKey}}
	srv := httptest.NewServer(a)
	defer srv.Close()
	env := map[string]string{
		"MODEL_URI": tinyModel, "THREADS": "1", "CONTEXT_SIZE": "1024", "MAX_TOKENS": "8",
		"AUTH_TYPE": "NONE", "API_KEY_PARAMETER": "/chatbot/api-key", "AWS_ENDPOINT_URL_SSM": srv.URL,
		"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "us-east-1",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_LAMBDA_FUNCTION_NAME": "my-function",
	}
	p := start(t, env, bin, "-addr", "127.0.0.1:0", "-log-json")
	var base string
	waitFor(t, "listening line", p, func() bool {
		_, after, ok := strings.Cut(p.out.String(), `"msg":"listening","url":"`)
		base, _, _ = strings.Cut(after, `"`)
		return ok
	})
	waitFor(t, "a loaded model", p, func() bool {
		resp, err := http.Get(base + "healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	for _, tc := range []struct {
		key    string
		status int
	}{{"", 401}, {"sk-wrong", 401}, {testKey, 200}} {
		req, _ := http.NewRequest(http.MethodPost, base+"v1/chat/completions", strings.NewReader(`{"messages":[{"role":"user","content":"Hi"}],"max_tokens":3}`))
		if tc.key != "" {
			req.Header.Set("Authorization", "Bearer "+tc.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("key %q: %s, want %d", tc.key, resp.Status, tc.status)
		}
	}
	if len(a.calls) != 1 || a.calls[0] != "AmazonSSM.GetParameter /chatbot/api-key" {
		t.Errorf("calls to the stand-in %q", a.calls)
	}
	waitFor(t, "the answer's metrics", p, func() bool { return strings.Contains(p.out.String(), `"Event":"answer"`) })
	var events []string
	for line := range strings.Lines(p.out.String()) {
		if !strings.Contains(line, `"_aws"`) {
			continue
		}
		_, root, err := checkEMF([]byte(line))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if root["FunctionName"] != "my-function" {
			t.Errorf("FunctionName %v", root["FunctionName"])
		}
		events = append(events, root["Event"].(string))
	}
	if strings.Join(events, ",") != "cold_start,answer" {
		t.Errorf("metric lines %q, want the cold start and one answer", events)
	}
}
