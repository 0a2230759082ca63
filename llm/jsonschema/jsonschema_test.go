package jsonschema_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	validator "github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/llm/internal/gguf"
	"github.com/memload/memload/llm/jsonschema"
)

var seeds = flag.Int("jsonschema.seeds", 4, "answers sampled per schema in TestSampledAnswersValidate")

func TestMain(m *testing.M) {
	// go test without make: the libraries `make llama` installs.
	if os.Getenv(llm.LibraryEnv) == "" {
		if root, err := testutil.RepoRoot(); err == nil {
			os.Setenv(llm.LibraryEnv, filepath.Join(root, ".bin", "llama", "linux-"+map[string]string{"amd64": "x64"}[runtime.GOARCH]+map[string]string{"arm64": "arm64"}[runtime.GOARCH]))
		}
	}
	code := m.Run()
	if shared.dir != "" {
		shared.model.Close()
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// testCase is one schema of testdata (see testdata/README).
type testCase struct {
	Name    string
	Draft   int
	Schema  json.RawMessage
	Error   string // "unsupported" or "invalid": the converter must refuse it
	Keyword string // the keyword the refusal names
}

func loadCases(t testing.TB) []testCase {
	t.Helper()
	var all []testCase
	for _, f := range []string{"llamacpp.json", "extra.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		var cs []testCase
		if err := json.Unmarshal(b, &cs); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for i := range cs {
			cs[i].Name = strings.TrimSuffix(f, ".json") + "/" + cs[i].Name
		}
		all = append(all, cs...)
	}
	return all
}

// shared is a tiny random-weight model, loaded once for all tests, and
// the ids of the tokens the tests nudge.
var shared struct {
	once                    sync.Once
	dir                     string
	model                   *llm.Model
	err                     error
	eos, quote, brace, brkt int
}

func tinyModel(t testing.TB) *llm.Model {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "jsonschema-test")
		if shared.err != nil {
			return
		}
		path := filepath.Join(shared.dir, "tiny.gguf")
		if shared.err = testutil.WriteModel(path, testutil.TinyConfig("qwen2")); shared.err != nil {
			return
		}
		f, err := os.Open(path)
		if err != nil {
			shared.err = err
			return
		}
		defer f.Close()
		fi, _ := f.Stat()
		h, err := gguf.Parse(f, fi.Size())
		if err != nil {
			shared.err = err
			return
		}
		tokens, _ := h.Strings("tokenizer.ggml.tokens")
		eos, _ := h.Uint("tokenizer.ggml.eos_token_id")
		shared.eos = int(eos)
		for i, tok := range tokens {
			switch tok {
			case `"`:
				shared.quote = i
			case "}":
				shared.brace = i
			case "]":
				shared.brkt = i
			}
		}
		shared.model, shared.err = llm.Load(context.Background(), path, func(o *llm.Options) {
			o.Threads = 1
			o.ContextSize = 1024
		})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.model
}

// sample returns the model's answer under grammar g with seed s, and
// whether it finished ("stop") rather than being cut at MaxTokens. Odd
// seeds nudge the model to close strings, objects and arrays and to end as
// soon as the grammar lets it: random weights seldom do.
func sample(t *testing.T, m *llm.Model, g string, s uint32) (string, bool) {
	t.Helper()
	var out strings.Builder
	st, err := m.Chat(context.Background(), []llm.Message{{Role: llm.RoleUser, Content: "Answer in JSON."}},
		func(p string) error { out.WriteString(p); return nil },
		func(o *llm.ChatOptions) {
			o.Grammar, o.Temperature, o.Seed, o.MaxTokens = g, 1, s, 400
			o.TopK, o.TopP, o.MinP = 0, 1, 0
			o.LogitBias = map[int]float32{shared.eos: 3, shared.quote: 2, shared.brace: 2, shared.brkt: 2}
			if s%2 == 1 {
				o.LogitBias = map[int]float32{shared.eos: 100, shared.quote: 5, shared.brace: 5, shared.brkt: 5}
			}
		})
	if err != nil {
		t.Fatalf("seed %d: %v", s, err)
	}
	return out.String(), st.FinishReason == "stop"
}

func compile(t *testing.T, c testCase) *validator.Schema {
	t.Helper()
	doc, err := validator.UnmarshalJSON(bytes.NewReader(c.Schema))
	if err != nil {
		t.Fatal(err)
	}
	comp := validator.NewCompiler()
	comp.AssertFormat()
	if c.Draft == 7 {
		comp.DefaultDraft(validator.Draft7)
	}
	if err := comp.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := comp.Compile("schema.json")
	if err != nil {
		t.Fatalf("the validator refuses the schema: %v", err)
	}
	return s
}

// TestSampledAnswersValidate converts each schema of testdata, samples
// answers under its grammar from a random-weight model in llama.cpp, and
// validates every finished answer against the schema with an independent
// validator (all but the rare ones llama.cpp lets through as invalid UTF-8,
// which are not JSON). Schemas marked as errors must be refused by name.
func TestSampledAnswersValidate(t *testing.T) {
	m := tinyModel(t)
	var answers, badUTF8 atomic.Int64
	defer func() {
		// A sampler defect, not the converter's: it must stay rare.
		if n, bad := answers.Load(), badUTF8.Load(); bad*50 > n {
			t.Errorf("%d answers of %d were invalid UTF-8", bad, n+bad)
		}
	}()
	for _, c := range loadCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			g, err := jsonschema.Grammar(c.Schema)
			if c.Error != "" {
				checkRefusal(t, err, c.Error, c.Keyword)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v := compile(t, c)
			finished := 0
			for s := range uint32(*seeds) {
				answer, ok := sample(t, m, g, s+1)
				if !ok {
					t.Logf("seed %d: cut at MaxTokens: %.60q...", s+1, answer)
					continue
				}
				finished++
				if !utf8.ValidString(answer) {
					// llama.cpp's grammar decodes UTF-8 leniently: an
					// overlong form or a lead byte followed by a
					// non-continuation byte passes as one character, which
					// Go decodes as several. Not JSON, so not validated;
					// counted below.
					t.Logf("seed %d: llama.cpp let through invalid UTF-8: %q", s+1, answer)
					badUTF8.Add(1)
					continue
				}
				answers.Add(1)
				inst, err := validator.UnmarshalJSON(strings.NewReader(answer))
				if err != nil {
					t.Errorf("seed %d: answer %q is not JSON: %v\ngrammar:\n%s", s+1, answer, err, g)
					continue
				}
				if err := v.Validate(inst); err != nil {
					t.Errorf("seed %d: answer %q is invalid: %v\ngrammar:\n%s", s+1, answer, err, g)
				}
			}
			if finished*2 < *seeds {
				t.Errorf("only %d of %d answers finished: too few validated", finished, *seeds)
			}
		})
	}
}

func checkRefusal(t *testing.T, err error, kind, keyword string) {
	t.Helper()
	want := map[string]error{"unsupported": jsonschema.ErrUnsupported, "invalid": jsonschema.ErrInvalid}[kind]
	var e *jsonschema.Error
	if !errors.Is(err, want) || !errors.As(err, &e) {
		t.Fatalf("error %v, want one matching %v", err, want)
	}
	if e.Keyword != keyword || !strings.Contains(err.Error(), fmt.Sprintf("%q", keyword)) {
		t.Errorf("error %q names keyword %q, want %q", err, e.Keyword, keyword)
	}
}
