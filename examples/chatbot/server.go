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

	// afterPiece, if set, runs after each piece of an answer is handled.
	// Tests use it to hold generation until the client has gone.
	afterPiece func(ctx context.Context, n int)
}

func newServer(cfg config, l *loader, logger *slog.Logger) *server {
	s := &server{cfg: cfg, load: l, log: logger, mux: http.NewServeMux(), slot: make(chan struct{}, 1), progressEvery: time.Second}
	s.mux.HandleFunc("GET /{$}", s.page)
	s.mux.HandleFunc("GET /healthz", s.health)
	s.mux.HandleFunc("POST /v1/chat/completions", s.chat)
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

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
	Busy      bool       `json:"busy"`
	Requests  int64      `json:"requests"`
	UptimeS   float64    `json:"uptime_s"`
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	phase, loaded, total := s.load.state()
	a := healthAnswer{Status: "loading", Phase: phase, Model: s.cfg.ModelName, Loaded: loaded, Total: total,
		Busy: len(s.slot) > 0, Requests: s.requests.Load(), UptimeS: time.Since(processStart).Seconds()}
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
	writeJSON(w, e.Status, struct {
		Error *apiError `json:"error"`
	}{e})
}

// chat serves POST /v1/chat/completions.
func (s *server) chat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.requests.Add(1)
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	req, msgs, apply, aerr := parseChatRequest(r.Body, s.cfg)
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
	out := &answer{w: w, rc: http.NewResponseController(w), stream: req.Stream, id: "chatcmpl-" + rand.Text(),
		created: time.Now().Unix(), model: s.cfg.ModelName}

	m, waited, aerr := s.waitModel(ctx, out)
	if aerr != nil {
		s.log.Warn("chat failed", "status", aerr.Status, "reason", aerr.Message, "waited_ms", ms(waited))
		out.fail(aerr)
		return
	}
	if waited > 0 && !req.Stream {
		w.Header().Set("X-Model-Wait", waited.Round(time.Millisecond).String())
	}

	var text strings.Builder
	pieces := 0
	st, err := m.Chat(ctx, msgs, func(piece string) error {
		pieces++
		if s.afterPiece != nil {
			defer s.afterPiece(ctx, pieces)
		}
		if !req.Stream {
			text.WriteString(piece)
			return nil
		}
		return out.delta(piece)
	}, apply)
	attrs := []any{"stream", req.Stream, "prompt_tokens", st.PromptTokens, "prompt_tps", round1(st.PromptTokensPerSecond()),
		"generated_tokens", st.GeneratedTokens, "generate_tps", round1(st.GenerateTokensPerSecond()),
		"first_token_ms", ms(st.TimeToFirstToken), "waited_ms", ms(waited), "duration_ms", ms(time.Since(start))}
	switch {
	case err == nil:
	case errors.Is(err, llm.ErrContextFull):
		s.log.Info("chat refused", append(attrs, "status", http.StatusBadRequest, "reason", err.Error())...)
		out.fail(badRequest("the conversation does not fit in the model's context window: %v; send fewer or shorter messages", err))
		return
	case r.Context().Err() != nil:
		// The client went away (locally) or the invocation ended.
		s.log.Info("chat cancelled", append(attrs, "reason", context.Cause(r.Context()).Error())...)
		return
	case ctx.Err() != nil:
		// Our own deadline, ahead of the function's timeout.
		st.FinishReason = "length"
		s.log.Warn("chat cut short before the function's timeout", attrs...)
	case out.writeErr != nil:
		s.log.Info("chat cancelled", append(attrs, "reason", "write: "+out.writeErr.Error())...)
		return
	default:
		s.log.Error("chat failed", append(attrs, "err", err)...)
		out.fail(&apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: "generation failed: " + err.Error()})
		return
	}
	s.log.Info("chat", append(attrs, "finish_reason", st.FinishReason)...)
	if req.Stream {
		out.finish(st, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
		return
	}
	reason := st.FinishReason
	writeJSON(w, http.StatusOK, chatResponse{
		ID: out.id, Object: "chat.completion", Created: out.created, Model: out.model,
		Choices: []chatChoice{{Message: &chatMessage{Role: llm.RoleAssistant, Content: textContent(text.String())}, FinishReason: &reason}},
		Usage:   usageOf(st), Timings: timingsOf(st),
	})
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

// delta streams a piece of the answer; the first one carries the role.
func (a *answer) delta(piece string) error {
	if !a.roleSent {
		a.roleSent = true
		if err := a.event(a.chunk(&chatDelta{Role: llm.RoleAssistant}, nil)); err != nil {
			return err
		}
	}
	return a.event(a.chunk(&chatDelta{Content: piece}, nil))
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
