package main

//go:generate go run ./sdkrecord -out testdata/sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/memload/memload/llm"
)

// chatRequest is OpenAI's chat completion request. Every field of the API
// is listed: each is honoured, ignored because it cannot change the answer,
// or refused with a 400 that says why (see check). A field that is not in
// the API is refused too, so that a typo does not pass unnoticed.
type chatRequest struct {
	Model               string            `json:"model"` // ignored: one model is served
	Messages            []json.RawMessage `json:"messages"`
	Stream              bool              `json:"stream"`
	StreamOptions       *streamOptions    `json:"stream_options"`
	MaxTokens           *int              `json:"max_tokens"`
	MaxCompletionTokens *int              `json:"max_completion_tokens"`
	Temperature         *float32          `json:"temperature"`
	TopP                *float32          `json:"top_p"`
	Seed                *int64            `json:"seed"`
	Stop                stopList          `json:"stop"`
	N                   *int              `json:"n"`

	// llama.cpp server's extensions, which its clients send.
	TopK            *int     `json:"top_k"`
	MinP            *float32 `json:"min_p"`
	ReasoningFormat string   `json:"reasoning_format"`

	// Honoured through llm's sampler: penalties over the last
	// llm.PenaltyLastN tokens, biases by token id, and json_object
	// through llm.JSONGrammar.
	FrequencyPenalty *float64           `json:"frequency_penalty"`
	PresencePenalty  *float64           `json:"presence_penalty"`
	LogitBias        map[string]float64 `json:"logit_bias"`
	ResponseFormat   *responseFormat    `json:"response_format"`

	// Accepted at their neutral value only: llm has no log probabilities
	// or tools.
	Logprobs         *bool             `json:"logprobs"`
	TopLogprobs      *int              `json:"top_logprobs"`
	Tools            []json.RawMessage `json:"tools"`
	ToolChoice       json.RawMessage   `json:"tool_choice"`
	Functions        []json.RawMessage `json:"functions"`
	FunctionCall     json.RawMessage   `json:"function_call"`
	Modalities       []string          `json:"modalities"`
	Audio            json.RawMessage   `json:"audio"`
	ReasoningEffort  json.RawMessage   `json:"reasoning_effort"`
	Verbosity        json.RawMessage   `json:"verbosity"`
	WebSearchOptions json.RawMessage   `json:"web_search_options"`
	Moderation       json.RawMessage   `json:"moderation"`

	// Ignored: bookkeeping, caching, billing and latency hints that cannot
	// change the answer. parallel_tool_calls only matters with tools, and
	// a prediction only makes OpenAI's answer faster.
	User                 json.RawMessage `json:"user"`
	Metadata             json.RawMessage `json:"metadata"`
	Store                json.RawMessage `json:"store"`
	ServiceTier          json.RawMessage `json:"service_tier"`
	SafetyIdentifier     json.RawMessage `json:"safety_identifier"`
	PromptCacheKey       json.RawMessage `json:"prompt_cache_key"`
	PromptCacheRetention json.RawMessage `json:"prompt_cache_retention"`
	PromptCacheOptions   json.RawMessage `json:"prompt_cache_options"`
	ParallelToolCalls    json.RawMessage `json:"parallel_tool_calls"`
	Prediction           json.RawMessage `json:"prediction"`
}

type streamOptions struct {
	IncludeUsage       bool            `json:"include_usage"`
	IncludeObfuscation json.RawMessage `json:"include_obfuscation"` // ignored: there is no padding to add
}

type responseFormat struct {
	Type       string          `json:"type"`
	JSONSchema json.RawMessage `json:"json_schema"`
}

// requestMessage is a message of a request: what OpenAI's SDKs send,
// including what they copy back from an answer (the Node SDK's stream
// helper adds refusal and parsed; llama.cpp-style answers carry
// reasoning_content).
type requestMessage struct {
	Role    string      `json:"role"`
	Content textContent `json:"content"`

	Name             string          `json:"name"`              // ignored: the templates have no names
	Refusal          *string         `json:"refusal"`           // ignored: this model's answers are content
	Parsed           json.RawMessage `json:"parsed"`            // ignored: the Node SDK's parsed content
	Annotations      json.RawMessage `json:"annotations"`       // ignored: URL citations of web search
	ReasoningContent json.RawMessage `json:"reasoning_content"` // ignored: templates drop earlier reasoning
	ToolCalls        []any           `json:"tool_calls"`        // refused unless empty
	ToolCallID       string          `json:"tool_call_id"`      // refused
	FunctionCall     json.RawMessage `json:"function_call"`     // refused unless null
	Audio            json.RawMessage `json:"audio"`             // refused unless null
}

// textContent is a message's content: a string, or an array of parts of
// which only text parts are accepted (and an assistant's refusal parts,
// ignored).
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
		switch p.Type {
		case "text":
			sb.WriteString(p.Text)
		case "refusal":
		default:
			return &fieldError{param: "content", why: fmt.Sprintf("a part of type %q: the model reads text only", p.Type)}
		}
	}
	*t = textContent(sb.String())
	return nil
}

// fieldError is a value that a field's decoder refuses as unsupported.
type fieldError struct{ param, why string }

func (e *fieldError) Error() string { return "`" + e.param + "` is not supported: " + e.why }

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

// unsupported refuses a field, saying why.
func unsupported(param, why string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "unsupported_parameter", Param: param,
		Message: fmt.Sprintf("`%s` is not supported: %s", param, why)}
}

// chatCall is a checked request: what the handler and llm need.
type chatCall struct {
	stream       bool
	includeUsage bool
	rawReasoning bool // reasoning_format "none": thinking stays in content
	msgs         []llm.Message
	apply        func(*llm.ChatOptions)
}

// parseChatRequest reads and checks a request body against the limits in
// cfg.
func parseChatRequest(body io.Reader, cfg config) (*chatCall, *apiError) {
	data, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
				Message: fmt.Sprintf("request body exceeds %d bytes", tooBig.Limit)}
		}
		return nil, badRequest("reading the request body: %v", err)
	}
	var req chatRequest
	if aerr := decodeStrict(data, &req, ""); aerr != nil {
		return nil, aerr
	}
	if aerr := req.check(); aerr != nil {
		return nil, aerr
	}

	if len(req.Messages) == 0 {
		return nil, badRequest("messages is empty: send at least one message")
	}
	msgs := make([]llm.Message, 0, len(req.Messages))
	size := 0
	for i, raw := range req.Messages {
		m, aerr := parseMessage(raw, i)
		if aerr != nil {
			return nil, aerr
		}
		size += len(m.Content)
		msgs = append(msgs, m)
	}
	if size > cfg.MaxPromptBytes {
		return nil, badRequest("the messages hold %d bytes of text; the limit is %d", size, cfg.MaxPromptBytes)
	}
	if msgs[len(msgs)-1].Role == llm.RoleAssistant {
		return nil, badRequest("the last message is the assistant's: end with a user message")
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
			return nil, badRequest("%s is %d; it must be between 1 and %d", v.name, *v.n, cfg.MaxTokens)
		}
		maxTokens = *v.n
	}
	if req.N != nil && *req.N != 1 {
		return nil, badRequest("n is %d: only one choice is generated", *req.N)
	}
	if t := req.Temperature; t != nil && (*t < 0 || *t > 2) {
		return nil, badRequest("temperature is %g; it must be between 0 and 2", *t)
	}
	if p := req.TopP; p != nil && (*p <= 0 || *p > 1) {
		return nil, badRequest("top_p is %g; it must be in (0, 1]", *p)
	}
	if k := req.TopK; k != nil && *k < 0 {
		return nil, badRequest("top_k is %d; it must be 0 (off) or more", *k)
	}
	if p := req.MinP; p != nil && (*p < 0 || *p > 1) {
		return nil, badRequest("min_p is %g; it must be between 0 and 1", *p)
	}
	if len(req.Stop) > 4 {
		return nil, badRequest("stop has %d strings; at most 4", len(req.Stop))
	}
	for i, s := range req.Stop {
		if s == "" {
			return nil, badRequest("stop[%d] is empty", i)
		}
	}
	for _, p := range []struct {
		name string
		v    *float64
	}{{"frequency_penalty", req.FrequencyPenalty}, {"presence_penalty", req.PresencePenalty}} {
		if p.v != nil && (*p.v < -2 || *p.v > 2) {
			return nil, badRequest("%s is %g; it must be between -2 and 2", p.name, *p.v)
		}
	}
	bias := make(map[int]float32, len(req.LogitBias))
	for id, b := range req.LogitBias {
		tok, err := strconv.Atoi(id)
		if err != nil || tok < 0 {
			return nil, badRequest("logit_bias key %q is not a token id: keys are token ids as strings, such as \"42\"", id)
		}
		if b < -100 || b > 100 {
			return nil, badRequest("logit_bias of token %d is %g; it must be between -100 and 100", tok, b)
		}
		bias[tok] = float32(b)
	}
	jsonObject := req.ResponseFormat != nil && req.ResponseFormat.Type == "json_object"
	call := &chatCall{stream: req.Stream, includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage, msgs: msgs}
	switch req.ReasoningFormat {
	case "", "auto", "deepseek":
	case "none":
		call.rawReasoning = true
	default:
		return nil, &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "unsupported_value", Param: "reasoning_format",
			Message: fmt.Sprintf("reasoning_format %q is not supported: use \"deepseek\" (or \"auto\", the default: thinking in reasoning_content) or \"none\" (the raw text in content)", req.ReasoningFormat)}
	}
	// Only what the request sets: llm's defaults stand for the rest.
	call.apply = func(o *llm.ChatOptions) {
		o.MaxTokens = maxTokens
		if req.Temperature != nil {
			o.Temperature = *req.Temperature
		}
		if req.TopP != nil {
			o.TopP = *req.TopP
		}
		if req.TopK != nil {
			o.TopK = *req.TopK
		}
		if req.MinP != nil {
			o.MinP = *req.MinP
		}
		if req.Seed != nil {
			o.Seed = uint32(*req.Seed)
		}
		o.Stop = req.Stop
		if req.FrequencyPenalty != nil {
			o.FrequencyPenalty = float32(*req.FrequencyPenalty)
		}
		if req.PresencePenalty != nil {
			o.PresencePenalty = float32(*req.PresencePenalty)
		}
		if len(bias) > 0 {
			o.LogitBias = bias
		}
		if jsonObject {
			o.Grammar = llm.JSONGrammar
		}
	}
	return call, nil
}

// check refuses the fields that are set to something this server cannot
// do. Their neutral values (0, false, empty, null) pass.
func (r *chatRequest) check() *apiError {
	set := func(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }
	switch {
	case r.Logprobs != nil && *r.Logprobs:
		return unsupported("logprobs", "answers carry no log probabilities")
	case r.TopLogprobs != nil && *r.TopLogprobs != 0:
		return unsupported("top_logprobs", "answers carry no log probabilities")
	case r.ResponseFormat != nil && r.ResponseFormat.Type == "json_schema":
		// A schema's GBNF needs a sound converter (llama.cpp's is a few
		// thousand lines of Python and C++); none is here yet.
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "unsupported_value", Param: "response_format",
			Message: "`response_format` \"json_schema\" is not supported: this server cannot turn a JSON schema into a grammar yet; use {\"type\":\"json_object\"} (any JSON object, grammar-constrained) and describe the schema in the prompt"}
	case r.ResponseFormat != nil && r.ResponseFormat.Type != "" && r.ResponseFormat.Type != "text" && r.ResponseFormat.Type != "json_object":
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "unsupported_value", Param: "response_format",
			Message: fmt.Sprintf("`response_format` %q is not supported: use \"text\", \"json_object\"", r.ResponseFormat.Type)}
	case len(r.Tools) > 0:
		return unsupported("tools", "this server has no function calling; send the conversation as text")
	case len(r.Functions) > 0:
		return unsupported("functions", "this server has no function calling")
	case set(r.FunctionCall) && string(r.FunctionCall) != `"none"`:
		return unsupported("function_call", "this server has no function calling")
	case set(r.ToolChoice) && string(r.ToolChoice) != `"none"` && string(r.ToolChoice) != `"auto"`:
		return unsupported("tool_choice", "this server has no function calling; only \"none\" or \"auto\" (with no tools) are accepted")
	case set(r.Audio):
		return unsupported("audio", "the model answers in text only")
	case len(r.Modalities) > 1 || len(r.Modalities) == 1 && r.Modalities[0] != "text":
		return unsupported("modalities", `the model answers in text only: send ["text"] or leave it out`)
	case set(r.ReasoningEffort):
		return unsupported("reasoning_effort", "the model's reasoning cannot be steered; a thinking model's reasoning comes as reasoning_content")
	case set(r.Verbosity):
		return unsupported("verbosity", "the model's answer length cannot be steered; use max_completion_tokens")
	case set(r.WebSearchOptions):
		return unsupported("web_search_options", "this server does not search the web")
	case set(r.Moderation):
		return unsupported("moderation", "this server runs no moderation model")
	}
	return nil
}

// parseMessage decodes and checks messages[i].
func parseMessage(raw json.RawMessage, i int) (llm.Message, *apiError) {
	var m requestMessage
	field := fmt.Sprintf("messages[%d]", i)
	if aerr := decodeStrict(raw, &m, field+"."); aerr != nil {
		return llm.Message{}, aerr
	}
	role := m.Role
	switch role {
	case "developer":
		role = llm.RoleSystem
	case llm.RoleSystem, llm.RoleUser, llm.RoleAssistant:
	case "tool", "function":
		return llm.Message{}, unsupported(field+".role", fmt.Sprintf("role %q: this server has no function calling", m.Role))
	default:
		return llm.Message{}, badRequest("%s.role %q is not supported: use system, developer, user or assistant", field, m.Role)
	}
	switch {
	case len(m.ToolCalls) > 0:
		return llm.Message{}, unsupported(field+".tool_calls", "this server has no function calling")
	case m.ToolCallID != "":
		return llm.Message{}, unsupported(field+".tool_call_id", "this server has no function calling")
	case len(m.FunctionCall) > 0 && string(m.FunctionCall) != "null":
		return llm.Message{}, unsupported(field+".function_call", "this server has no function calling")
	case len(m.Audio) > 0 && string(m.Audio) != "null":
		return llm.Message{}, unsupported(field+".audio", "the model reads text only")
	}
	return llm.Message{Role: role, Content: string(m.Content)}, nil
}

// decodeStrict decodes one JSON object into v, refusing fields v does not
// have; prefix names where v sits in the request ("messages[2].").
func decodeStrict(data []byte, v any, prefix string) *apiError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return unsupported(prefix+fe.param, fe.why)
		}
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			name = prefix + strings.Trim(name, `"`)
			return unsupported(name, "it is not a field of OpenAI's chat completions API, nor one of llama.cpp's that this server takes (top_k, min_p, reasoning_format)")
		}
		return badRequest("malformed JSON body: %s", jsonError(err, data, prefix))
	}
	if dec.More() {
		return badRequest("malformed JSON body: more than one JSON value")
	}
	return nil
}

// jsonError says where a body went wrong.
func jsonError(err error, data []byte, prefix string) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("%v (at byte %d)", syn, syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("field %s%s must be %s, not %s", prefix, typ.Field, typ.Type, typ.Value)
		}
		if prefix != "" {
			return fmt.Sprintf("%s must be a JSON object, not %s", strings.TrimSuffix(prefix, "."), typ.Value)
		}
		return fmt.Sprintf("the body must be a JSON object, not %s", typ.Value)
	case errors.Is(err, io.EOF):
		return "the body is empty"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("the body ends early (after %d bytes)", len(data))
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if prefix != "" {
		msg = strings.TrimSuffix(prefix, ".") + ": " + msg
	}
	return msg
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
	Index        int              `json:"index"`
	Message      *responseMessage `json:"message,omitempty"`
	Delta        *chatDelta       `json:"delta,omitempty"`
	FinishReason *string          `json:"finish_reason"`
}

// responseMessage is the answer of a non-streamed request.
type responseMessage struct {
	Role             string `json:"role"`
	Content          string `json:"content"`
	ReasoningContent string `json:"reasoning_content,omitempty"` // a thinking model's reasoning
}

type chatDelta struct {
	Role             string `json:"role,omitempty"`
	Content          string `json:"content,omitempty"`
	ReasoningContent string `json:"reasoning_content,omitempty"`
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
