package openai

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/memload/memload/llm"
)

// Handler serves OpenAI's chat completions API under /v1/: POST
// /v1/chat/completions (streamed as server-sent events with "stream":
// true), GET /v1/models and /v1/models/{id}, and OpenAI-shaped 404s for
// the rest. Set its fields before the first request; they are not changed
// afterwards.
type Handler struct {
	// Model returns the model to answer with, waiting for it if need be;
	// while it waits it may call progress, which a streamed answer passes
	// on as an SSE comment. An *Error is answered as it is, another error
	// as a 500.
	Model func(ctx context.Context, progress func(status string)) (Model, error)

	Name    string    // the model's id in answers and in /v1/models
	Created time.Time // the model's creation time in /v1/models

	MaxTokens      int   // cap and default of max_tokens; 0: no cap
	MaxPromptBytes int   // cap of the messages' text; 0: no cap
	MaxBodyBytes   int64 // cap of a request body; 0: no cap

	// DeadlineMargin is kept free before the request context's deadline:
	// generation stops that long before it, so that the answer still ends
	// properly (under Lambda, before the function's timeout).
	DeadlineMargin time.Duration

	// Grammars returns a new builder of GBNF grammars from JSON schemas,
	// for tools and response_format json_schema; nil refuses both.
	Grammars func() GrammarBuilder

	// Admit, if set, runs once a request is parsed, before it waits for
	// the model: an *Error refuses the request (such as a 429 while busy);
	// release runs when the answer is done.
	Admit func(r *http.Request) (release func(), err error)

	// Answered, if set, is told of every answer generated, finished or
	// not, for metrics.
	Answered func(Answer)

	Logger *slog.Logger // default: discard

	once sync.Once
	mux  *http.ServeMux
}

// Answer describes one generated answer.
type Answer struct {
	Stream       bool
	FinishReason string // "stop", "length", "tool_calls" or "cancelled"
	Stats        llm.Stats
	Waited       time.Duration // for the model
	Duration     time.Duration // of the whole request
}

// GrammarBuilder composes a GBNF grammar (llama.cpp's format) from JSON
// schemas and rules of its own; jsonschema.Builder is one.
type GrammarBuilder interface {
	// Schema adds the rules for a JSON schema and returns the name of its
	// rule; a keyword it cannot enforce is an error naming it.
	Schema(schema []byte) (rule string, err error)
	// Rule adds a rule and returns its name (made unique if need be).
	Rule(name, body string) string
	// Grammar returns the grammar whose root is the rule named root.
	Grammar(root string) string
}

// ServeHTTP serves a request under /v1/.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.once.Do(func() {
		if h.Logger == nil {
			h.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
		h.mux = http.NewServeMux()
		h.mux.HandleFunc("POST /v1/chat/completions", h.chat)
		h.mux.HandleFunc("GET /v1/models", h.models)
		h.mux.HandleFunc("GET /v1/models/{id...}", h.models)
		h.mux.HandleFunc("/", h.notFound)
	})
	h.mux.ServeHTTP(w, r)
}

// model is a model in OpenAI's shape.
type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// models serves GET /v1/models and /v1/models/{id}: the one model served.
func (h *Handler) models(w http.ResponseWriter, r *http.Request) {
	m := model{ID: h.Name, Object: "model", Created: h.Created.Unix(), OwnedBy: "memload"}
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
		WriteError(w, &Error{Status: http.StatusNotFound, Type: "invalid_request_error", Param: "model", Code: "model_not_found",
			Message: fmt.Sprintf("the model %q does not exist: this server serves %q", id, m.ID)})
	}
}

// notFound answers the rest in OpenAI's error shape.
func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/chat/completions":
		w.Header().Set("Allow", "POST")
		WriteError(w, &Error{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error",
			Message: r.Method + " " + r.URL.Path + ": use POST"})
		return
	case "/v1/models":
		w.Header().Set("Allow", "GET")
		WriteError(w, &Error{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error",
			Message: r.Method + " " + r.URL.Path + ": use GET"})
		return
	}
	WriteError(w, &Error{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "unknown_url",
		Message: fmt.Sprintf("unknown endpoint %s %s: this server has POST /v1/chat/completions, GET /v1/models and GET /v1/models/{id}", r.Method, r.URL.Path)})
}

// chat serves POST /v1/chat/completions.
func (h *Handler) chat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if h.MaxBodyBytes > 0 {
		r.Body = http.MaxBytesReader(w, r.Body, h.MaxBodyBytes)
	}
	call, aerr := h.parse(r.Body)
	if aerr != nil {
		h.Logger.Info("chat refused", "status", aerr.Status, "reason", aerr.Message)
		WriteError(w, aerr)
		return
	}
	if h.Admit != nil {
		release, err := h.Admit(r)
		if err != nil {
			aerr := asError(err)
			h.Logger.Info("chat refused", "status", aerr.Status, "reason", aerr.Message)
			WriteError(w, aerr)
			return
		}
		defer release()
	}

	ctx := r.Context()
	if d, ok := ctx.Deadline(); ok && h.DeadlineMargin > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-h.DeadlineMargin))
		defer cancel()
	}
	out := &answer{w: w, rc: http.NewResponseController(w), stream: call.stream, id: "chatcmpl-" + rand.Text(),
		created: time.Now().Unix(), model: h.Name}

	waitStart := time.Now()
	m, err := h.Model(ctx, func(status string) {
		if call.stream {
			out.comment(status)
		}
	})
	waited := time.Since(waitStart)
	if err != nil {
		aerr := asError(err)
		h.Logger.Warn("chat failed", "status", aerr.Status, "reason", aerr.Message, "waited_ms", ms(waited))
		out.fail(aerr)
		return
	}
	if waited >= time.Millisecond && !call.stream {
		w.Header().Set("X-Model-Wait", waited.Round(time.Millisecond).String())
	}

	g, aerr := newGeneration(h, call, m, out)
	if aerr != nil {
		h.Logger.Info("chat refused", "status", aerr.Status, "reason", aerr.Message)
		out.fail(aerr)
		return
	}
	st, err := m.Chat(ctx, call.msgs, g.piece, call.apply, g.options)
	if err == nil {
		err = g.flush()
	}
	attrs := []any{"stream", call.stream, "prompt_tokens", st.PromptTokens, "cached_tokens", st.CachedTokens,
		"prompt_tps", round1(st.PromptTokensPerSecond()), "generated_tokens", st.GeneratedTokens,
		"generate_tps", round1(st.GenerateTokensPerSecond()), "first_token_ms", ms(st.TimeToFirstToken),
		"waited_ms", ms(waited), "duration_ms", ms(time.Since(start))}
	answered := func(reason string) {
		if h.Answered != nil {
			h.Answered(Answer{Stream: call.stream, FinishReason: reason, Stats: st, Waited: waited, Duration: time.Since(start)})
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, llm.ErrContextFull):
		h.Logger.Info("chat refused", append(attrs, "status", http.StatusBadRequest, "reason", err.Error())...)
		out.fail(badRequest("the conversation does not fit in the model's context window: %v; send fewer or shorter messages", err))
		return
	case errors.Is(err, llm.ErrBadOption):
		// llm checks the options' ranges and values; the request's field
		// is named after the option.
		h.Logger.Info("chat refused", append(attrs, "status", http.StatusBadRequest, "reason", err.Error())...)
		out.fail(badOption(err))
		return
	case errors.Is(err, errBadMessage):
		// The template could not render the messages: llm's error names
		// the message (llm's indices are the request's).
		h.Logger.Info("chat refused", append(attrs, "status", http.StatusBadRequest, "reason", err.Error())...)
		out.fail(&Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: "messages",
			Message: "the model's chat template cannot take these messages: " + err.Error()})
		return
	case r.Context().Err() != nil:
		// The client went away (locally) or the invocation ended.
		h.Logger.Info("chat cancelled", append(attrs, "reason", context.Cause(r.Context()).Error())...)
		answered("cancelled")
		return
	case ctx.Err() != nil:
		// Our own deadline, ahead of the request's.
		st.FinishReason = "length"
		h.Logger.Warn("chat cut short before the function's timeout", attrs...)
	case out.writeErr != nil:
		h.Logger.Info("chat cancelled", append(attrs, "reason", "write: "+out.writeErr.Error())...)
		answered("cancelled")
		return
	default:
		h.Logger.Error("chat failed", append(attrs, "err", err)...)
		out.fail(&Error{Status: http.StatusInternalServerError, Type: "server_error", Message: "generation failed: " + err.Error()})
		return
	}
	reason := st.FinishReason
	if reason == "stop" && g.calls() > 0 {
		reason = "tool_calls"
	}
	h.Logger.Info("chat", append(attrs, "finish_reason", reason, "tool_calls", g.calls())...)
	answered(reason)
	if call.stream {
		out.finish(st, reason, call.includeUsage)
		return
	}
	writeJSON(w, http.StatusOK, g.response(st, reason))
}

// asError returns err as an *Error, a 500 unless it is one.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Status: http.StatusInternalServerError, Type: "server_error", Message: err.Error()}
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// generation routes one answer's text: reasoning apart, tool calls parsed,
// log probabilities alongside; streamed as deltas or gathered.
type generation struct {
	call   *chatCall
	out    *answer
	format *toolFormat // nil: no calls are parsed
	reason *reasoningSplitter
	tools  *toolSplitter

	grammar  string
	triggers []string

	text, reasoning strings.Builder // not streamed
	toolCalls       []toolCall      // not streamed
	logprobs        []logprob       // not streamed
}

func newGeneration(h *Handler, call *chatCall, m Model, out *answer) (*generation, *Error) {
	g := &generation{call: call, out: out}
	if m.Thinks() && !call.rawReasoning {
		g.reason = &reasoningSplitter{emit: g.split}
	}
	var err error
	switch {
	case call.schema != nil:
		b := h.Grammars()
		rule, err := b.Schema(call.schema)
		if err != nil {
			return nil, badRequest("response_format.json_schema.schema: %v", err)
		}
		if m.Thinks() {
			rule = b.Rule("answer", thinkRule(b)+" "+rule)
		}
		g.grammar = b.Grammar(rule)
	case len(call.tools) > 0 && call.toolChoice != "none":
		g.format = formatOf(m.Template())
		if g.format == nil {
			return nil, unsupported("tools", fmt.Sprintf("the model's chat template (%q) has no tool-call format this server parses; families with tools: %s",
				m.Template(), strings.Join(toolFamilies(), ", ")))
		}
		g.tools = &toolSplitter{f: g.format, content: g.emit, call: g.toolDelta, mistralIDs: g.format.name == "mistral", names: map[string]bool{}}
		for _, t := range call.tools {
			g.tools.names[t.Name] = true
		}
		if h.Grammars != nil {
			g.grammar, g.triggers, err = g.format.grammar(h.Grammars(), call.tools, call.toolChoice, call.toolName, call.parallel, m.Thinks())
			if err != nil {
				return nil, badRequest("tools: %v", err)
			}
		}
	}
	return g, nil
}

// options sets what the generation adds to the request's options.
func (g *generation) options(o *ChatOptions) {
	if g.grammar != "" {
		o.Grammar = g.grammar
		o.GrammarTriggers = g.triggers
	}
	if g.call.logprobs {
		o.OnLogprob = g.logprob
	}
}

func (g *generation) logprob(t TokenLogprob) error {
	if g.call.stream {
		g.out.logprobs = append(g.out.logprobs, logprobOf(t))
	} else {
		g.logprobs = append(g.logprobs, logprobOf(t))
	}
	return nil
}

// piece takes the next piece of generated text.
func (g *generation) piece(p string) error {
	if g.reason != nil {
		return g.reason.write(p)
	}
	return g.content(p)
}

// split takes the reasoning splitter's output.
func (g *generation) split(reasoning, content string) error {
	if reasoning != "" {
		if !g.call.stream {
			g.reasoning.WriteString(reasoning)
			return nil
		}
		return g.out.delta(&chatDelta{ReasoningContent: reasoning})
	}
	return g.content(content)
}

// content takes answer text, which may hold tool calls.
func (g *generation) content(c string) error {
	if g.tools != nil {
		return g.tools.write(c)
	}
	return g.emit(c)
}

// emit sends answer text that is no tool call.
func (g *generation) emit(c string) error {
	if c == "" {
		return nil
	}
	if !g.call.stream {
		g.text.WriteString(c)
		return nil
	}
	return g.out.delta(&chatDelta{Content: c})
}

// toolDelta sends a call's start (id and name) or a piece of its arguments.
func (g *generation) toolDelta(index int, id, name, args string) error {
	if !g.call.stream {
		if index == len(g.toolCalls) {
			g.toolCalls = append(g.toolCalls, toolCall{ID: id, Type: "function"})
			g.toolCalls[index].Function.Name = name
		}
		g.toolCalls[index].Function.Arguments += args
		return nil
	}
	tc := toolCall{Index: &index, ID: id}
	if id != "" {
		tc.Type = "function"
	}
	tc.Function.Name, tc.Function.Arguments = name, args
	return g.out.delta(&chatDelta{ToolCalls: []toolCall{tc}})
}

func (g *generation) calls() int {
	if g.tools == nil {
		return 0
	}
	return g.tools.calls
}

// flush passes on what the splitters hold back, at the end of the text.
func (g *generation) flush() error {
	if g.reason != nil {
		if err := g.reason.flush(); err != nil {
			return err
		}
	}
	if g.tools != nil {
		return g.tools.flush()
	}
	return nil
}

// response is the non-streamed answer.
func (g *generation) response(st llm.Stats, reason string) chatResponse {
	msg := &responseMessage{Role: llm.RoleAssistant, ReasoningContent: g.reasoning.String(), ToolCalls: g.toolCalls}
	if text := g.text.String(); text != "" || len(g.toolCalls) == 0 {
		msg.Content = &text
	}
	choice := chatChoice{Message: msg, FinishReason: &reason}
	if g.call.logprobs {
		choice.Logprobs = &choiceLogprobs{Content: g.logprobs}
		if choice.Logprobs.Content == nil {
			choice.Logprobs.Content = []logprob{}
		}
	}
	return chatResponse{ID: g.out.id, Object: "chat.completion", Created: g.out.created, Model: g.out.model,
		Choices: []chatChoice{choice}, Usage: usageOf(st), Timings: timingsOf(st)}
}
