package main

import (
	"fmt"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"strconv"
	"strings"
	"time"
)

// config is the function's configuration, read from the environment so that
// the same binary runs under Lambda (where the template sets it) and locally.
type config struct {
	ModelURI    string // MODEL_URI: s3://bucket/key, or a local path
	ModelSHA256 string // MODEL_SHA256: expected SHA-256 in hex, optional
	ModelName   string // MODEL_NAME: the "model" of answers; default: the key's base name

	Threads     int    // THREADS: llama.cpp threads; 0: the vCPUs the function has
	ContextSize int    // CONTEXT_SIZE: tokens, prompt and answer together
	Template    string // CHAT_TEMPLATE: override the model's chat template family
	// REPACK: "true" (the default): llama.cpp copies the weights its CPU
	// kernels prefer into their layout as it loads, for prompts 1.5-3.5x
	// as fast; its load runs while the model downloads, each weight
	// repacked once its bytes are in (gated), unless llama.cpp's log does
	// not add up, when it waits for the last byte (the cold start's
	// fallback). "false": it maps the weights as they are, and its load
	// runs while the model downloads (ready about 0.1 s after the last
	// byte).
	Repack bool

	MaxTokens      int   // MAX_TOKENS: the cap on max_tokens, and its default
	MaxBodyBytes   int64 // MAX_BODY_BYTES: request bodies larger than this get 413
	MaxPromptBytes int   // MAX_PROMPT_BYTES: total message content, in bytes

	// INIT_WAIT: under Lambda, how long init waits for the model before it
	// starts taking requests. Default 8 s, as an on-demand init ends at
	// 10 s; 15 min (the whole load) in a provisioned-concurrency
	// environment, whose init may last up to the function's timeout and
	// whose users should never wait for the load.
	InitWait time.Duration
	// LOAD_WAIT: how long a request waits for a model that is still
	// loading, further bounded by the invocation's deadline.
	LoadWait time.Duration
	// LOAD_ATTEMPTS: how many times a failed model load is tried in all;
	// LOAD_BACKOFF: the wait before the second attempt, doubled after.
	LoadAttempts int
	LoadBackoff  time.Duration

	OnLambda bool // AWS_LAMBDA_RUNTIME_API is set

	// AUTH_TYPE: "AWS_IAM" (the default: the Function URL checks SigV4
	// signatures, the function nothing) or "NONE" (the URL is public: the
	// function requires an API key, Authorization: Bearer, that it reads
	// at init from API_KEY_PARAMETER, an SSM SecureString, or
	// API_KEY_SECRET, a Secrets Manager secret).
	AuthType        string
	APIKeyParameter string
	APIKeySecret    string

	// CORS_ALLOW_ORIGINS: comma-separated origins ("https://app.example",
	// or "*") whose pages may call the API. Locally, pages served from
	// loopback (localhost, 127.0.0.1, [::1]) may always.
	CORSOrigins []string

	// METRICS_NAMESPACE: the CloudWatch namespace of the embedded-metric
	// lines; FunctionName (AWS_LAMBDA_FUNCTION_NAME) is their dimension.
	MetricsNamespace string
	FunctionName     string

	// awsOptions, set by main rather than read from the environment, go
	// to every AWS configuration the function loads (the model's S3
	// client, the API key's client): under SnapStart, the HTTP client
	// whose idle connections are closed before the snapshot.
	awsOptions []func(*awsconfig.LoadOptions) error
}

// Auth types.
const (
	authIAM  = "AWS_IAM"
	authNone = "NONE"
)

// configFromEnv reads the configuration; getenv is os.Getenv outside tests.
func configFromEnv(getenv func(string) string) (config, error) {
	c := config{
		ModelURI:       getenv("MODEL_URI"),
		ModelSHA256:    strings.ToLower(getenv("MODEL_SHA256")),
		ModelName:      getenv("MODEL_NAME"),
		Template:       getenv("CHAT_TEMPLATE"),
		ContextSize:    4096,
		Repack:         true,
		MaxTokens:      1024,
		MaxBodyBytes:   1 << 20,
		MaxPromptBytes: 64 << 10,
		InitWait:       8 * time.Second,
		LoadWait:       5 * time.Minute,
		LoadAttempts:   3,
		LoadBackoff:    time.Second,

		OnLambda:         getenv("AWS_LAMBDA_RUNTIME_API") != "",
		AuthType:         getenv("AUTH_TYPE"),
		APIKeyParameter:  getenv("API_KEY_PARAMETER"),
		APIKeySecret:     getenv("API_KEY_SECRET"),
		MetricsNamespace: getenv("METRICS_NAMESPACE"),
		FunctionName:     getenv("AWS_LAMBDA_FUNCTION_NAME"),
	}
	if getenv("AWS_LAMBDA_INITIALIZATION_TYPE") == "provisioned-concurrency" {
		c.InitWait = 15 * time.Minute
	}
	if c.MetricsNamespace == "" {
		c.MetricsNamespace = "memload/chatbot"
	}
	if c.FunctionName == "" {
		c.FunctionName = "chatbot"
	}
	if c.ModelURI == "" {
		return c, fmt.Errorf("MODEL_URI is not set: give s3://bucket/key of a GGUF model (or a local path)")
	}
	if c.ModelName == "" {
		c.ModelName = c.ModelURI[strings.LastIndexByte(c.ModelURI, '/')+1:]
	}
	ints := []struct {
		name string
		p    *int
		min  int
	}{
		{"THREADS", &c.Threads, 0},
		{"CONTEXT_SIZE", &c.ContextSize, 16},
		{"MAX_TOKENS", &c.MaxTokens, 1},
		{"MAX_PROMPT_BYTES", &c.MaxPromptBytes, 1},
		{"LOAD_ATTEMPTS", &c.LoadAttempts, 1},
	}
	for _, v := range ints {
		if s := getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < v.min {
				return c, fmt.Errorf("%s=%q: want an integer ≥ %d", v.name, s, v.min)
			}
			*v.p = n
		}
	}
	if s := getenv("MAX_BODY_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return c, fmt.Errorf("MAX_BODY_BYTES=%q: want a positive integer", s)
		}
		c.MaxBodyBytes = n
	}
	durations := []struct {
		name string
		p    *time.Duration
	}{{"INIT_WAIT", &c.InitWait}, {"LOAD_WAIT", &c.LoadWait}, {"LOAD_BACKOFF", &c.LoadBackoff}}
	for _, v := range durations {
		if s := getenv(v.name); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				return c, fmt.Errorf("%s=%q: want a duration such as 8s", v.name, s)
			}
			*v.p = d
		}
	}

	if s := getenv("REPACK"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return c, fmt.Errorf("REPACK=%q: want true (repacked weights: faster prompts, repacked during the download) or false (the weights mapped as they are)", s)
		}
		c.Repack = b
	}

	switch c.AuthType {
	case "":
		c.AuthType = authIAM
	case authIAM, authNone:
	default:
		return c, fmt.Errorf("AUTH_TYPE=%q: want AWS_IAM (the Function URL checks SigV4 signatures) or NONE (the function checks an API key)", c.AuthType)
	}
	if c.AuthType == authNone {
		switch {
		case c.APIKeyParameter == "" && c.APIKeySecret == "":
			return c, fmt.Errorf("AUTH_TYPE=NONE without an API key: set API_KEY_PARAMETER (an SSM SecureString) or API_KEY_SECRET (a Secrets Manager secret) to the key clients must send as Authorization: Bearer; without one the function would answer anyone")
		case c.APIKeyParameter != "" && c.APIKeySecret != "":
			return c, fmt.Errorf("API_KEY_PARAMETER=%q and API_KEY_SECRET=%q are both set: give one", c.APIKeyParameter, c.APIKeySecret)
		}
	}

	if s := getenv("CORS_ALLOW_ORIGINS"); s != "" {
		for _, o := range strings.Split(s, ",") {
			o = strings.TrimSpace(o)
			if o == "" {
				continue
			}
			if err := checkOrigin(o); err != nil {
				return c, fmt.Errorf("CORS_ALLOW_ORIGINS: %w", err)
			}
			c.CORSOrigins = append(c.CORSOrigins, strings.TrimSuffix(o, "/"))
		}
	}
	return c, nil
}
