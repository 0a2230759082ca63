package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/memload/memload/llm"
)

// chatRequest is the subset of OpenAI's chat completion request that the
// function understands. Other fields are refused, not ignored: a client that
// asks for tools or logprobs should hear that it gets none.
type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	Temperature         *float32       `json:"temperature"`
	TopP                *float32       `json:"top_p"`
	Seed                *int64         `json:"seed"`
	Stop                stopList       `json:"stop"`
	N                   *int           `json:"n"`
	User                string         `json:"user"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role    string      `json:"role"`
	Content textContent `json:"content"`
}

// textContent is a message's content: a string, or an array of parts of
// which only text parts are accepted.
type textContent string

func (t *textContent) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		err := json.Unmarshal(b, &s)
		*t = textContent(s)
		return err
	}
	if string(b) == "null" {
		*t = ""
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return errors.New("content must be a string or an array of text parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return fmt.Errorf("content part of type %q is not supported: only text", p.Type)
		}
		sb.WriteString(p.Text)
	}
	*t = textContent(sb.String())
	return nil
}

// stopList is OpenAI's stop: a string or an array of strings.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*s = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var one string
		err := json.Unmarshal(b, &one)
		*s = stopList{one}
		return err
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("stop must be a string or an array of strings")
	}
	*s = many
	return nil
}

// apiError is an error answer in OpenAI's shape.
type apiError struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    string `json:"code,omitempty"`
}

func (e *apiError) Error() string { return e.Message }

func badRequest(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: fmt.Sprintf(format, args...)}
}

// parseChatRequest reads and checks a request body against the limits in
// cfg, and returns what llm needs.
func parseChatRequest(body io.Reader, cfg config) (*chatRequest, []llm.Message, func(*llm.ChatOptions), *apiError) {
	data, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, nil, nil, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
				Message: fmt.Sprintf("request body exceeds %d bytes", tooBig.Limit)}
		}
		return nil, nil, nil, badRequest("reading the request body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var req chatRequest
	if err := dec.Decode(&req); err != nil {
		return nil, nil, nil, badRequest("malformed JSON body: %s", jsonError(err, data))
	}
	if dec.More() {
		return nil, nil, nil, badRequest("malformed JSON body: more than one JSON value")
	}

	if len(req.Messages) == 0 {
		return nil, nil, nil, badRequest("messages is empty: send at least one message")
	}
	msgs := make([]llm.Message, 0, len(req.Messages))
	size := 0
	for i, m := range req.Messages {
		role := m.Role
		switch role {
		case "developer":
			role = llm.RoleSystem
		case llm.RoleSystem, llm.RoleUser, llm.RoleAssistant:
		default:
			return nil, nil, nil, badRequest("messages[%d].role %q is not supported: use system, user or assistant", i, m.Role)
		}
		size += len(m.Content)
		msgs = append(msgs, llm.Message{Role: role, Content: string(m.Content)})
	}
	if size > cfg.MaxPromptBytes {
		return nil, nil, nil, badRequest("the messages hold %d bytes of text; the limit is %d", size, cfg.MaxPromptBytes)
	}
	if msgs[len(msgs)-1].Role == llm.RoleAssistant {
		return nil, nil, nil, badRequest("the last message is the assistant's: end with a user message")
	}

	maxTokens := cfg.MaxTokens
	for _, v := range []struct {
		name string
		n    *int
	}{{"max_tokens", req.MaxTokens}, {"max_completion_tokens", req.MaxCompletionTokens}} {
		if v.n == nil {
			continue
		}
		if *v.n < 1 || *v.n > cfg.MaxTokens {
			return nil, nil, nil, badRequest("%s is %d; it must be between 1 and %d", v.name, *v.n, cfg.MaxTokens)
		}
		maxTokens = *v.n
	}
	if req.N != nil && *req.N != 1 {
		return nil, nil, nil, badRequest("n is %d: only one choice is generated", *req.N)
	}
	if t := req.Temperature; t != nil && (*t < 0 || *t > 2) {
		return nil, nil, nil, badRequest("temperature is %g; it must be between 0 and 2", *t)
	}
	if p := req.TopP; p != nil && (*p <= 0 || *p > 1) {
		return nil, nil, nil, badRequest("top_p is %g; it must be in (0, 1]", *p)
	}
	if len(req.Stop) > 4 {
		return nil, nil, nil, badRequest("stop has %d strings; at most 4", len(req.Stop))
	}
	for i, s := range req.Stop {
		if s == "" {
			return nil, nil, nil, badRequest("stop[%d] is empty", i)
		}
	}
	// Only what the request sets: llm's defaults stand for the rest.
	apply := func(o *llm.ChatOptions) {
		o.MaxTokens = maxTokens
		if req.Temperature != nil {
			o.Temperature = *req.Temperature
		}
		if req.TopP != nil {
			o.TopP = *req.TopP
		}
		if req.Seed != nil {
			o.Seed = uint32(*req.Seed)
		}
		o.Stop = req.Stop
	}
	return &req, msgs, apply, nil
}

// jsonError says where a body went wrong.
func jsonError(err error, data []byte) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("%v (at byte %d)", syn, syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("field %s must be %s, not %s", typ.Field, typ.Type, typ.Value)
		}
		return fmt.Sprintf("the body must be a JSON object, not %s", typ.Value)
	case errors.Is(err, io.EOF):
		return "the body is empty"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("the body ends early (after %d bytes)", len(data))
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// Answers, non-streaming and streaming.

type chatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usage       `json:"usage,omitempty"`
	Timings *timings     `json:"timings,omitempty"`
}

type chatChoice struct {
	Index        int          `json:"index"`
	Message      *chatMessage `json:"message,omitempty"`
	Delta        *chatDelta   `json:"delta,omitempty"`
	FinishReason *string      `json:"finish_reason"`
}

type chatDelta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// timings are llama.cpp server's per-answer measurements, under the names
// its own server uses.
type timings struct {
	PromptN            int     `json:"prompt_n"`
	PromptMS           float64 `json:"prompt_ms"`
	PromptPerSecond    float64 `json:"prompt_per_second"`
	PredictedN         int     `json:"predicted_n"`
	PredictedMS        float64 `json:"predicted_ms"`
	PredictedPerSecond float64 `json:"predicted_per_second"`
	FirstTokenMS       float64 `json:"first_token_ms"`
}

func usageOf(st llm.Stats) *usage {
	return &usage{PromptTokens: st.PromptTokens, CompletionTokens: st.GeneratedTokens, TotalTokens: st.PromptTokens + st.GeneratedTokens}
}

func timingsOf(st llm.Stats) *timings {
	return &timings{
		PromptN: st.PromptTokens, PromptMS: ms(st.PromptDuration), PromptPerSecond: st.PromptTokensPerSecond(),
		PredictedN: st.GeneratedTokens, PredictedMS: ms(st.GenerateDuration), PredictedPerSecond: st.GenerateTokensPerSecond(),
		FirstTokenMS: ms(st.TimeToFirstToken),
	}
}
