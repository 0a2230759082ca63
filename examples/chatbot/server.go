package main

//go:generate go run ./sdkrecord -out testdata/sdk

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/memload/memload/openai"
)

//go:embed chat.html
var chatPage []byte

// deadlineMargin is kept free at the end of an invocation so that an answer
// cut short by the function's timeout still ends properly.
const deadlineMargin = 2 * time.Second

// server is the function: one http.Handler, served by lambdaurl under Lambda
// and by net/http locally.
type server struct {
	cfg  config
	load *loader
	log  *slog.Logger
	mux  *http.ServeMux

	// slot holds the one generation allowed at a time: llama.cpp has one
	// context, and Lambda sends an environment one request at a time.
	slot     chan struct{}
	requests atomic.Int64

	// progressEvery is how often a streamed answer waiting for the model
	// reports the load's progress.
	progressEvery time.Duration

	// apiKey, if set, is required on /v1/ as Authorization: Bearer.
	apiKey string
	// metrics receives a line per answer.
	metrics *metrics

	// api serves OpenAI's API under /v1/.
	api *openai.Handler

	// afterPiece, if set, runs after each piece of an answer is handled.
	// Tests use it to hold generation until the client has gone.
	afterPiece func(ctx context.Context, n int)
}

func newServer(cfg config, l *loader, logger *slog.Logger) *server {
	s := &server{cfg: cfg, load: l, log: logger, mux: http.NewServeMux(), slot: make(chan struct{}, 1), progressEvery: time.Second}
	s.api = &openai.Handler{
		Model: s.model, Name: cfg.ModelName, Created: processStart,
		MaxTokens: cfg.MaxTokens, MaxPromptBytes: cfg.MaxPromptBytes, MaxBodyBytes: cfg.MaxBodyBytes,
		DeadlineMargin: deadlineMargin, Grammars: grammars, Admit: s.admit, Answered: s.answered, Logger: logger,
	}
	s.mux.HandleFunc("GET /{$}", s.page)
	s.mux.HandleFunc("GET /healthz", s.health)
	s.mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.api.ServeHTTP(w, r)
	})
	s.mux.Handle("/v1/", s.api)
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cors(w, r) {
		return
	}
	if s.apiKey != "" && strings.HasPrefix(r.URL.Path, "/v1/") {
		if e := authorized(r, s.apiKey); e != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chatbot"`)
			s.log.Info("request refused", "path", r.URL.Path, "status", e.Status, "reason", e.Code)
			openai.WriteError(w, e)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

func (s *server) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(chatPage)
}

type healthAnswer struct {
	Status    string     `json:"status"` // "loading", "ready" or "failed"
	Phase     string     `json:"phase"`  // what the load is doing
	Model     string     `json:"model"`
	Loaded    int64      `json:"loaded_bytes"`
	Total     int64      `json:"total_bytes"`
	ColdStart *coldStart `json:"cold_start,omitempty"`
	Auth      string     `json:"auth,omitempty"` // "api_key": /v1/ wants Authorization: Bearer
	Busy      bool       `json:"busy"`
	Requests  int64      `json:"requests"`
	UptimeS   float64    `json:"uptime_s"`
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	phase, loaded, total := s.load.state()
	a := healthAnswer{Status: "loading", Phase: phase, Model: s.cfg.ModelName, Loaded: loaded, Total: total,
		Busy: len(s.slot) > 0, Requests: s.requests.Load(), UptimeS: time.Since(processStart).Seconds()}
	if s.apiKey != "" {
		a.Auth = "api_key"
	}
	code := http.StatusServiceUnavailable
	if m, err := s.load.ready(); m != nil || err != nil {
		cold := s.load.cold
		a.ColdStart = &cold
		a.Status, code = "ready", http.StatusOK
		if err != nil {
			a.Status, code = "failed", http.StatusInternalServerError
		}
	}
	writeJSON(w, code, a)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// admit takes the one generation slot, or refuses the request.
func (s *server) admit(*http.Request) (func(), error) {
	select {
	case s.slot <- struct{}{}:
		return func() { <-s.slot }, nil
	default:
		return nil, &openai.Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "busy",
			Message: "busy: this server generates one answer at a time and is answering another request; retry shortly"}
	}
}

// answered writes an answer's embedded metrics.
func (s *server) answered(a openai.Answer) {
	st := a.Stats
	s.metrics.put([]metric{
		{"PromptTokens", unitCount, float64(st.PromptTokens)},
		{"GeneratedTokens", unitCount, float64(st.GeneratedTokens)},
		{"PromptTokensPerSecond", unitCountPerS, st.PromptTokensPerSecond()},
		{"GenerationTokensPerSecond", unitCountPerS, st.GenerateTokensPerSecond()},
		{"TimeToFirstToken", unitMS, ms(st.TimeToFirstToken)},
		{"ModelWait", unitMS, ms(a.Waited)},
		{"AnswerDuration", unitMS, ms(a.Duration)},
	}, map[string]any{"Event": "answer", "FinishReason": a.FinishReason, "Stream": a.Stream})
}

// model returns the model, waiting for it while it loads, at most
// LoadWait. A streamed answer reports the load's progress meanwhile, as SSE
// comments, which clients ignore and people reading the stream see.
func (s *server) model(ctx context.Context, progress func(string)) (openai.Model, error) {
	failed := func(err error) error {
		return &openai.Error{Status: http.StatusInternalServerError, Type: "server_error", Code: "model_load_failed",
			Message: "the model could not be loaded: " + err.Error()}
	}
	m, err := s.load.ready()
	if err != nil {
		return nil, failed(err)
	}
	if m != nil {
		return &llmModel{m: m, s: s}, nil
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, s.cfg.LoadWait)
	defer cancel()
	tick := time.NewTicker(s.progressEvery)
	defer tick.Stop()
	for {
		phase, loaded, total := s.load.state()
		progress(fmt.Sprintf("model loading (%s, %d of %d MiB) for %v", phase, loaded>>20, total>>20, time.Since(start).Round(time.Second)))
		select {
		case <-s.load.done:
			m, err := s.load.ready()
			if err != nil {
				return nil, failed(err)
			}
			return &llmModel{m: m, s: s}, nil
		case <-tick.C:
			continue
		case <-wctx.Done():
		}
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return nil, &openai.Error{Status: 499, Type: "cancelled", Message: "the client went away"}
		}
		phase, loaded, total = s.load.state()
		return nil, &openai.Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "model_loading",
			Message: fmt.Sprintf("the model is still loading (%s, %d of %d MiB) after waiting %v; retry shortly",
				phase, loaded>>20, total>>20, time.Since(start).Round(time.Second))}
	}
}
