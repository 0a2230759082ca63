package main

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/memload/memload/llm"
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

	// afterPiece, if set, runs after each piece of an answer is handled.
	// Tests use it to hold generation until the client has gone.
	afterPiece func(ctx context.Context, n int)
}

func newServer(cfg config, l *loader, logger *slog.Logger) *server {
	s := &server{cfg: cfg, load: l, log: logger, mux: http.NewServeMux(), slot: make(chan struct{}, 1), progressEvery: time.Second}
	s.mux.HandleFunc("GET /{$}", s.page)
	s.mux.HandleFunc("GET /healthz", s.health)
	s.mux.HandleFunc("POST /v1/chat/completions", s.chat)
	s.mux.HandleFunc("GET /v1/models", s.models)
	s.mux.HandleFunc("GET /v1/models/{id...}", s.models)
	s.mux.HandleFunc("/v1/", s.notFound)
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
			writeError(w, e)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// model is a model in OpenAI's shape.
type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// models serves GET /v1/models and /v1/models/{id}: the one model served.
func (s *server) models(w http.ResponseWriter, r *http.Request) {
	m := model{ID: s.cfg.ModelName, Object: "model", Created: processStart.Unix(), OwnedBy: "memload"}
	id := r.PathValue("id")
	switch {
	case r.URL.Path == "/v1/models":
		writeJSON(w, http.StatusOK, struct {
			Object string  `json:"object"`
			Data   []model `json:"data"`
		}{"list", []model{m}})
	case id == m.ID:
		writeJSON(w, http.StatusOK, m)
	default:
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Param: "model", Code: "model_not_found",
			Message: fmt.Sprintf("the model %q does not exist: this server serves %q", id, m.ID)})
	}
}

// notFound answers the rest of /v1/ in OpenAI's error shape.
func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/chat/completions":
		w.Header().Set("Allow", "POST")
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error",
			Message: r.Method + " " + r.URL.Path + ": use POST"})
		return
	case "/v1/models":
		w.Header().Set("Allow", "GET")
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error",
			Message: r.Method + " " + r.URL.Path + ": use GET"})
		return
	}
	writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "unknown_url",
		Message: fmt.Sprintf("unknown endpoint %s %s: this server has POST /v1/chat/completions, GET /v1/models and GET /v1/models/{id}", r.Method, r.URL.Path)})
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

func writeError(w http.ResponseWriter, e *apiError) {
	// OpenAI's SDKs retry 408, 409, 429 and 5xx unless told otherwise.
	switch {
	case e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable:
		w.Header().Set("X-Should-Retry", "true")
	case e.Status < 500, e.Code == "model_load_failed":
		// The same request gets the same answer; a model that failed to
		// load has had its retries already.
		w.Header().Set("X-Should-Retry", "false")
	}
	writeJSON(w, e.Status, struct {
		Error *apiError `json:"error"`
	}{e})
}

// chat serves POST /v1/chat/completions.
func (s *server) chat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.requests.Add(1)
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	call, aerr := parseChatRequest(r.Body, s.cfg)
	if aerr != nil {
		s.log.Info("chat refused", "status", aerr.Status, "reason", aerr.Message)
		writeError(w, aerr)
		return
	}
	select {
	case s.slot <- struct{}{}:
		defer func() { <-s.slot }()
	default:
		w.Header().Set("Retry-After", "1")
		s.log.Info("chat refused", "status", http.StatusTooManyRequests, "reason", "busy")
		writeError(w, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "busy",
			Message: "busy: this server generates one answer at a time and is answering another request; retry shortly"})
		return
	}

	ctx := r.Context()
	if d, ok := ctx.Deadline(); ok {
		// Under Lambda: stop in time to end the answer before the timeout.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-deadlineMargin))
		defer cancel()
	}
	out := &answer{w: w, rc: http.NewResponseController(w), stream: call.stream, id: "chatcmpl-" + rand.Text(),
		created: time.Now().Unix(), model: s.cfg.ModelName}

	m, waited, aerr := s.waitModel(ctx, out)
	if aerr != nil {
		s.log.Warn("chat failed", "status", aerr.Status, "reason", aerr.Message, "waited_ms", ms(waited))
		out.fail(aerr)
		return
	}
	if waited > 0 && !call.stream {
		w.Header().Set("X-Model-Wait", waited.Round(time.Millisecond).String())
	}

	// A thinking model's reasoning goes to reasoning_content, unless the
	// request wants the raw text.
	var text, reasoning strings.Builder
	emit := func(r, c string) error {
		if !call.stream {
			reasoning.WriteString(r)
			text.WriteString(c)
			return nil
		}
		return out.delta(r, c)
	}
	split := &reasoningSplitter{emit: emit}
	splitting := m.Thinks() && !call.rawReasoning
	pieces := 0
	// While a cancelled generation unwinds, llama.cpp's complaints about
	// the aborted computation are no errors.
	stopQuiet := context.AfterFunc(ctx, func() { s.load.cancelling.Add(1) })
	st, err := m.Chat(ctx, call.msgs, func(piece string) error {
		pieces++
		if s.afterPiece != nil {
			defer s.afterPiece(ctx, pieces)
		}
		if splitting {
			return split.write(piece)
		}
		return emit("", piece)
	}, call.apply)
	if err == nil && splitting {
		err = split.flush()
	}
	if !stopQuiet() {
		s.load.cancelling.Add(-1)
	}
	attrs := []any{"stream", call.stream, "prompt_tokens", st.PromptTokens, "prompt_tps", round1(st.PromptTokensPerSecond()),
		"generated_tokens", st.GeneratedTokens, "generate_tps", round1(st.GenerateTokensPerSecond()),
		"first_token_ms", ms(st.TimeToFirstToken), "waited_ms", ms(waited), "duration_ms", ms(time.Since(start))}
	switch {
	case err == nil:
	case errors.Is(err, llm.ErrContextFull):
		s.log.Info("chat refused", append(attrs, "status", http.StatusBadRequest, "reason", err.Error())...)
		out.fail(badRequest("the conversation does not fit in the model's context window: %v; send fewer or shorter messages", err))
		return
	case errors.Is(err, llm.ErrBadOption):
		// Checked by llm only: a logit_bias token outside the vocabulary,
		// an invalid grammar.
		s.log.Info("chat refused", append(attrs, "status", http.StatusBadRequest, "reason", err.Error())...)
		out.fail(badRequest("%v", err))
		return
	case r.Context().Err() != nil:
		// The client went away (locally) or the invocation ended.
		s.log.Info("chat cancelled", append(attrs, "reason", context.Cause(r.Context()).Error())...)
		s.answerMetrics(st, waited, start, call.stream, "cancelled")
		return
	case ctx.Err() != nil:
		// Our own deadline, ahead of the function's timeout.
		st.FinishReason = "length"
		s.log.Warn("chat cut short before the function's timeout", attrs...)
	case out.writeErr != nil:
		s.log.Info("chat cancelled", append(attrs, "reason", "write: "+out.writeErr.Error())...)
		s.answerMetrics(st, waited, start, call.stream, "cancelled")
		return
	default:
		s.log.Error("chat failed", append(attrs, "err", err)...)
		out.fail(&apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: "generation failed: " + err.Error()})
		return
	}
	s.log.Info("chat", append(attrs, "finish_reason", st.FinishReason)...)
	s.answerMetrics(st, waited, start, call.stream, st.FinishReason)
	if call.stream {
		out.finish(st, call.includeUsage)
		return
	}
	reason := st.FinishReason
	writeJSON(w, http.StatusOK, chatResponse{
		ID: out.id, Object: "chat.completion", Created: out.created, Model: out.model,
		Choices: []chatChoice{{Message: &responseMessage{Role: llm.RoleAssistant, Content: text.String(), ReasoningContent: reasoning.String()}, FinishReason: &reason}},
		Usage:   usageOf(st), Timings: timingsOf(st),
	})
}

// answerMetrics writes an answer's embedded metrics.
func (s *server) answerMetrics(st llm.Stats, waited time.Duration, start time.Time, stream bool, finish string) {
	s.metrics.put([]metric{
		{"PromptTokens", unitCount, float64(st.PromptTokens)},
		{"GeneratedTokens", unitCount, float64(st.GeneratedTokens)},
		{"PromptTokensPerSecond", unitCountPerS, st.PromptTokensPerSecond()},
		{"GenerationTokensPerSecond", unitCountPerS, st.GenerateTokensPerSecond()},
		{"TimeToFirstToken", unitMS, ms(st.TimeToFirstToken)},
		{"ModelWait", unitMS, ms(waited)},
		{"AnswerDuration", unitMS, ms(time.Since(start))},
	}, map[string]any{"Event": "answer", "FinishReason": finish, "Stream": stream})
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// waitModel returns the model, waiting for it while it loads, at most
// LoadWait. A streamed answer reports the load's progress meanwhile, as SSE
// comments, which clients ignore and people reading the stream see.
func (s *server) waitModel(ctx context.Context, out *answer) (*llm.Model, time.Duration, *apiError) {
	failed := func(err error) *apiError {
		return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "model_load_failed",
			Message: "the model could not be loaded: " + err.Error()}
	}
	m, err := s.load.ready()
	if err != nil {
		return nil, 0, failed(err)
	}
	if m != nil {
		return m, 0, nil
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, s.cfg.LoadWait)
	defer cancel()
	tick := time.NewTicker(s.progressEvery)
	defer tick.Stop()
	for {
		if out.stream {
			phase, loaded, total := s.load.state()
			out.comment(fmt.Sprintf("model loading (%s, %d of %d MiB) for %v", phase, loaded>>20, total>>20, time.Since(start).Round(time.Second)))
		}
		select {
		case <-s.load.done:
			m, err := s.load.ready()
			if err != nil {
				return nil, time.Since(start), failed(err)
			}
			return m, time.Since(start), nil
		case <-tick.C:
			continue
		case <-wctx.Done():
		}
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return nil, time.Since(start), &apiError{Status: 499, Type: "cancelled", Message: "the client went away"}
		}
		phase, loaded, total := s.load.state()
		return nil, time.Since(start), &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "model_loading",
			Message: fmt.Sprintf("the model is still loading (%s, %d of %d MiB) after waiting %v; retry shortly",
				phase, loaded>>20, total>>20, time.Since(start).Round(time.Second))}
	}
}

// answer writes one response: JSON, or server-sent events once the first
// event is written.
type answer struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	stream  bool
	id      string
	created int64
	model   string

	started  bool  // SSE headers are written
	roleSent bool  // the first delta, with the role, is written
	writeErr error // the first failed write: the client is gone
}

func (a *answer) start() {
	if a.started {
		return
	}
	a.started = true
	h := a.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	a.w.WriteHeader(http.StatusOK)
}

func (a *answer) write(p []byte) error {
	if a.writeErr != nil {
		return a.writeErr
	}
	if _, err := a.w.Write(p); err != nil {
		a.writeErr = err
		return err
	}
	// lambdaurl's writer is unbuffered and cannot flush: nothing to do there.
	if err := a.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		a.writeErr = err
	}
	return a.writeErr
}

func (a *answer) event(v any) error {
	a.start()
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return a.write(append(append([]byte("data: "), b...), "\n\n"...))
}

func (a *answer) comment(text string) {
	a.start()
	a.write([]byte(": " + text + "\n\n"))
}

func (a *answer) chunk(d *chatDelta, finish *string) chatResponse {
	c := chatResponse{ID: a.id, Object: "chat.completion.chunk", Created: a.created, Model: a.model}
	if d != nil || finish != nil {
		if d == nil {
			d = &chatDelta{}
		}
		c.Choices = []chatChoice{{Delta: d, FinishReason: finish}}
	} else {
		c.Choices = []chatChoice{}
	}
	return c
}

// delta streams a piece of the reasoning or of the answer; the first one
// carries the role.
func (a *answer) delta(reasoning, content string) error {
	if !a.roleSent {
		a.roleSent = true
		if err := a.event(a.chunk(&chatDelta{Role: llm.RoleAssistant}, nil)); err != nil {
			return err
		}
	}
	return a.event(a.chunk(&chatDelta{Content: content, ReasoningContent: reasoning}, nil))
}

// finish ends a streamed answer.
func (a *answer) finish(st llm.Stats, includeUsage bool) {
	if !a.roleSent {
		a.roleSent = true
		a.event(a.chunk(&chatDelta{Role: llm.RoleAssistant}, nil))
	}
	reason := st.FinishReason
	last := a.chunk(&chatDelta{}, &reason)
	last.Timings = timingsOf(st)
	a.event(last)
	if includeUsage {
		u := a.chunk(nil, nil)
		u.Usage = usageOf(st)
		a.event(u)
	}
	a.write([]byte("data: [DONE]\n\n"))
}

// fail reports an error: with its status while nothing is written, as an
// error event once a stream has started.
func (a *answer) fail(e *apiError) {
	if !a.started {
		if e.Status == 499 {
			return // nobody to tell
		}
		if e.Status == http.StatusServiceUnavailable {
			a.w.Header().Set("Retry-After", "5")
		}
		writeError(a.w, e)
		return
	}
	a.event(struct {
		Error *apiError `json:"error"`
	}{e})
	a.write([]byte("data: [DONE]\n\n"))
}
