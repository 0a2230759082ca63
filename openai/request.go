package openai

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
// the API is refused too, so that a typo does not pass unnoticed. Ranges
// are llm's to check (llm.ErrBadOption), except the server's own limits.
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

	// Honoured through llm's sampler: penalties, biases by token id,
	// grammars for response_format and tools, log probabilities.
	FrequencyPenalty  *float64           `json:"frequency_penalty"`
	PresencePenalty   *float64           `json:"presence_penalty"`
	LogitBias         map[string]float64 `json:"logit_bias"`
	ResponseFormat    *responseFormat    `json:"response_format"`
	Logprobs          *bool              `json:"logprobs"`
	TopLogprobs       *int               `json:"top_logprobs"`
	Tools             []toolParam        `json:"tools"`
	ToolChoice        json.RawMessage    `json:"tool_choice"`
	ParallelToolCalls *bool              `json:"parallel_tool_calls"`

	// Accepted at their neutral value only.
	Functions        []json.RawMessage `json:"functions"`
	FunctionCall     json.RawMessage   `json:"function_call"`
	Modalities       []string          `json:"modalities"`
	Audio            json.RawMessage   `json:"audio"`
	ReasoningEffort  json.RawMessage   `json:"reasoning_effort"`
	Verbosity        json.RawMessage   `json:"verbosity"`
	WebSearchOptions json.RawMessage   `json:"web_search_options"`
	Moderation       json.RawMessage   `json:"moderation"`

	// Ignored: bookkeeping, caching, billing and latency hints that cannot
	// change the answer; a prediction only makes OpenAI's answer faster.
	User                 json.RawMessage `json:"user"`
	Metadata             json.RawMessage `json:"metadata"`
	Store                json.RawMessage `json:"store"`
	ServiceTier          json.RawMessage `json:"service_tier"`
	SafetyIdentifier     json.RawMessage `json:"safety_identifier"`
	PromptCacheKey       json.RawMessage `json:"prompt_cache_key"`
	PromptCacheRetention json.RawMessage `json:"prompt_cache_retention"`
	PromptCacheOptions   json.RawMessage `json:"prompt_cache_options"`
	Prediction           json.RawMessage `json:"prediction"`
}

type streamOptions struct {
	IncludeUsage       bool            `json:"include_usage"`
	IncludeObfuscation json.RawMessage `json:"include_obfuscation"` // ignored: there is no padding to add
}

type responseFormat struct {
	Type       string          `json:"type"`
	JSONSchema *jsonSchemaSpec `json:"json_schema"`
}

type jsonSchemaSpec struct {
	Name        string          `json:"name"`
	Description string          `json:"description"` // ignored: the grammar is the schema
	Schema      json.RawMessage `json:"schema"`
	Strict      *bool           `json:"strict"` // ignored: always strict, through the grammar
}

// toolParam is an entry of tools.
type toolParam struct {
	Type     string          `json:"type"`
	Custom   json.RawMessage `json:"custom"` // refused: a custom tool's free-form input
	Function *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"` // ignored: always strict, through the grammar
	} `json:"function"`
}

// requestMessage is a message of a request: what OpenAI's SDKs send,
// including what they copy back from an answer (the Node SDK's stream
// helper adds refusal and parsed; llama.cpp-style answers carry
// reasoning_content).
type requestMessage struct {
	Role       string          `json:"role"`
	Content    textContent     `json:"content"`
	ToolCalls  []toolCallParam `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`

	Name             string          `json:"name"`              // ignored: the templates have no names
	Refusal          *string         `json:"refusal"`           // ignored: this model's answers are content
	Parsed           json.RawMessage `json:"parsed"`            // ignored: the Node SDK's parsed content
	Annotations      json.RawMessage `json:"annotations"`       // ignored: URL citations of web search
	ReasoningContent json.RawMessage `json:"reasoning_content"` // ignored: templates drop earlier reasoning
	FunctionCall     json.RawMessage `json:"function_call"`     // refused unless null
	Audio            json.RawMessage `json:"audio"`             // refused unless null
}

// toolCallParam is a call in an assistant message sent back.
type toolCallParam struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
		// The Node SDK's parse helpers copy back what they parsed.
		ParsedArguments json.RawMessage `json:"parsed_arguments"`
	} `json:"function"`
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

// chatCall is a checked request: what the handler and llm need.
type chatCall struct {
	stream       bool
	includeUsage bool
	rawReasoning bool // reasoning_format "none": thinking stays in content
	msgs         []Message
	logprobs     bool
	topLogprobs  int

	tools      []Tool
	toolChoice string // "auto", "required" or "function" (with toolName); "none" drops the tools
	toolName   string
	parallel   bool
	schema     json.RawMessage // response_format json_schema
	jsonObject bool

	apply func(*ChatOptions)
}

// parse reads and checks a request body.
func (h *Handler) parse(body io.Reader) (*chatCall, *Error) {
	data, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
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
	call := &chatCall{stream: req.Stream, includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage}
	if aerr := call.messages(req.Messages, h.MaxPromptBytes); aerr != nil {
		return nil, aerr
	}

	maxTokens := h.MaxTokens
	for _, v := range []struct {
		name string
		n    *int
	}{{"max_tokens", req.MaxTokens}, {"max_completion_tokens", req.MaxCompletionTokens}} {
		if v.n == nil {
			continue
		}
		if *v.n < 1 || h.MaxTokens > 0 && *v.n > h.MaxTokens {
			return nil, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: v.name,
				Message: fmt.Sprintf("%s is %d; it must be between 1 and %d", v.name, *v.n, h.MaxTokens)}
		}
		maxTokens = *v.n
	}
	if req.N != nil && *req.N != 1 {
		return nil, badRequest("n is %d: only one choice is generated", *req.N)
	}
	if len(req.Stop) > 4 {
		return nil, badRequest("stop has %d strings; at most 4", len(req.Stop))
	}
	bias := make(map[int]float32, len(req.LogitBias))
	for id, b := range req.LogitBias {
		tok, err := strconv.Atoi(id)
		if err != nil || tok < 0 {
			return nil, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: "logit_bias",
				Message: fmt.Sprintf("logit_bias key %q is not a token id: keys are token ids as strings, such as \"42\"", id)}
		}
		bias[tok] = float32(b)
	}
	switch req.ReasoningFormat {
	case "", "auto", "deepseek":
	case "none":
		call.rawReasoning = true
	default:
		return nil, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "unsupported_value", Param: "reasoning_format",
			Message: fmt.Sprintf("reasoning_format %q is not supported: use \"deepseek\" (or \"auto\", the default: thinking in reasoning_content) or \"none\" (the raw text in content)", req.ReasoningFormat)}
	}
	if req.Logprobs != nil {
		call.logprobs = *req.Logprobs
	}
	if req.TopLogprobs != nil {
		if !call.logprobs && *req.TopLogprobs != 0 {
			return nil, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: "top_logprobs",
				Message: "top_logprobs needs logprobs: true"}
		}
		call.topLogprobs = *req.TopLogprobs
	}
	if aerr := h.output(call, &req); aerr != nil {
		return nil, aerr
	}

	// Only what the request sets: llm's defaults stand for the rest.
	call.apply = func(o *ChatOptions) {
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
		if call.jsonObject {
			o.Grammar = llm.JSONGrammar
		}
		o.Tools = call.tools
		o.TopLogprobs = call.topLogprobs
	}
	return call, nil
}

// messages decodes and checks the conversation.
func (c *chatCall) messages(raws []json.RawMessage, maxBytes int) *Error {
	if len(raws) == 0 {
		return badRequest("messages is empty: send at least one message")
	}
	size := 0
	names := map[string]string{} // call id -> function name
	for i, raw := range raws {
		m, aerr := parseMessage(raw, i, names)
		if aerr != nil {
			return aerr
		}
		size += len(m.Content)
		for _, tc := range m.ToolCalls {
			size += len(tc.Arguments)
		}
		c.msgs = append(c.msgs, m)
	}
	if maxBytes > 0 && size > maxBytes {
		return badRequest("the messages hold %d bytes of text; the limit is %d", size, maxBytes)
	}
	if c.msgs[len(c.msgs)-1].Role == llm.RoleAssistant {
		return badRequest("the last message is the assistant's: end with a user message (or a tool's result)")
	}
	return nil
}

// output checks tools, tool_choice and response_format: what constrains
// the answer.
func (h *Handler) output(call *chatCall, req *chatRequest) *Error {
	if f := req.ResponseFormat; f != nil {
		switch f.Type {
		case "", "text":
		case "json_object":
			call.jsonObject = true
		case "json_schema":
			if f.JSONSchema == nil || len(f.JSONSchema.Schema) == 0 || string(f.JSONSchema.Schema) == "null" {
				return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: "response_format.json_schema.schema",
					Message: "response_format json_schema needs json_schema.schema: the JSON schema the answer must match"}
			}
			if aerr := h.checkSchema(f.JSONSchema.Schema, "response_format.json_schema.schema"); aerr != nil {
				return aerr
			}
			call.schema = f.JSONSchema.Schema
		default:
			return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "unsupported_value", Param: "response_format",
				Message: fmt.Sprintf("`response_format` %q is not supported: use \"text\", \"json_object\" or \"json_schema\"", f.Type)}
		}
	}

	call.parallel = req.ParallelToolCalls == nil || *req.ParallelToolCalls
	call.toolChoice = "auto"
	if c := req.ToolChoice; len(c) > 0 && string(c) != "null" {
		var s string
		var named struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		switch {
		case json.Unmarshal(c, &s) == nil && (s == "none" || s == "auto" || s == "required"):
			call.toolChoice = s
		case json.Unmarshal(c, &named) == nil && named.Type == "function" && named.Function.Name != "":
			call.toolChoice, call.toolName = "function", named.Function.Name
		default:
			return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "unsupported_value", Param: "tool_choice",
				Message: fmt.Sprintf("tool_choice %s is not supported: use \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}", c)}
		}
	}
	names := map[string]bool{}
	for i, t := range req.Tools {
		param := fmt.Sprintf("tools[%d]", i)
		if t.Type != "function" || t.Function == nil {
			return unsupported(param+".type", fmt.Sprintf("tools of type %q: only \"function\" tools, with a function object", t.Type))
		}
		f := t.Function
		if f.Name == "" || names[f.Name] {
			return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: param + ".function.name",
				Message: fmt.Sprintf("%s.function.name %q: each tool needs a name of its own", param, f.Name)}
		}
		names[f.Name] = true
		params := f.Parameters
		if len(params) == 0 || string(params) == "null" {
			params = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		call.tools = append(call.tools, Tool{Name: f.Name, Description: f.Description, Parameters: params})
	}
	switch {
	case call.toolChoice == "function" && !names[call.toolName]:
		return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: "tool_choice",
			Message: fmt.Sprintf("tool_choice names the function %q, which is not among the tools", call.toolName)}
	case call.toolChoice == "required" && len(call.tools) == 0:
		return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: "tool_choice",
			Message: "tool_choice \"required\" needs tools"}
	case call.toolChoice == "none":
		// The template still shows the tools, as OpenAI's model still
		// knows them; nothing is parsed as a call.
		return nil
	case len(call.tools) > 0 && call.schema != nil:
		return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: "response_format",
			Message: "response_format json_schema and tools together are not supported: the answer is either a call or the schema's JSON; send one of them"}
	}
	for i, t := range call.tools {
		if aerr := h.checkSchema(t.Parameters, fmt.Sprintf("tools[%d].function.parameters", i)); aerr != nil {
			return aerr
		}
	}
	return nil
}

// checkSchema refuses a schema the grammar converter cannot enforce.
func (h *Handler) checkSchema(schema json.RawMessage, param string) *Error {
	if h.Grammars == nil {
		return unsupported(param, "this server has no JSON-schema converter (Handler.Grammars is nil): use response_format {\"type\":\"json_object\"} and describe the schema in the prompt")
	}
	if _, err := h.Grammars().Schema(schema); err != nil {
		return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "unsupported_schema", Param: param,
			Message: fmt.Sprintf("%s cannot be enforced: %v", param, err)}
	}
	return nil
}

// check refuses the fields that are set to something this server cannot
// do. Their neutral values (0, false, empty, null) pass.
func (r *chatRequest) check() *Error {
	set := func(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }
	switch {
	case len(r.Functions) > 0:
		return unsupported("functions", "the deprecated functions are not served: send them as tools")
	case set(r.FunctionCall) && string(r.FunctionCall) != `"none"`:
		return unsupported("function_call", "the deprecated function_call is not served: use tools and tool_choice")
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

// parseMessage decodes and checks messages[i]; names maps the ids of the
// calls seen so far to their functions.
func parseMessage(raw json.RawMessage, i int, names map[string]string) (Message, *Error) {
	var m requestMessage
	field := fmt.Sprintf("messages[%d]", i)
	if aerr := decodeStrict(raw, &m, field+"."); aerr != nil {
		return Message{}, aerr
	}
	role := m.Role
	switch role {
	case "developer":
		role = llm.RoleSystem
	case llm.RoleSystem, llm.RoleUser, llm.RoleAssistant, RoleTool:
	case "function":
		return Message{}, unsupported(field+".role", "role \"function\" is deprecated: send results as role \"tool\" with a tool_call_id")
	default:
		return Message{}, badRequest("%s.role %q is not supported: use system, developer, user, assistant or tool", field, m.Role)
	}
	switch {
	case len(m.ToolCalls) > 0 && role != llm.RoleAssistant:
		return Message{}, badRequest("%s.tool_calls: only an assistant's message has tool calls", field)
	case role == RoleTool && m.ToolCallID == "":
		return Message{}, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: field + ".tool_call_id",
			Message: field + " is a tool's result without a tool_call_id: give the id of the call it answers"}
	case len(m.FunctionCall) > 0 && string(m.FunctionCall) != "null":
		return Message{}, unsupported(field+".function_call", "the deprecated function_call is not served: send tool_calls")
	case len(m.Audio) > 0 && string(m.Audio) != "null":
		return Message{}, unsupported(field+".audio", "the model reads text only")
	}
	msg := Message{Role: role, Content: string(m.Content), ToolCallID: m.ToolCallID}
	for j, tc := range m.ToolCalls {
		if tc.Type != "" && tc.Type != "function" || tc.Function.Name == "" {
			return Message{}, badRequest("%s.tool_calls[%d]: want a function call with a name", field, j)
		}
		args := tc.Function.Arguments
		if strings.TrimSpace(args) == "" {
			args = "{}"
		}
		if !json.Valid([]byte(args)) {
			return Message{}, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: fmt.Sprintf("%s.tool_calls[%d].function.arguments", field, j),
				Message: fmt.Sprintf("%s.tool_calls[%d].function.arguments is not JSON: send the arguments string the call came with", field, j)}
		}
		msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: args})
		names[tc.ID] = tc.Function.Name
	}
	if role == RoleTool {
		msg.Name = names[m.ToolCallID]
		if msg.Name == "" {
			msg.Name = m.Name
		}
	}
	return msg, nil
}

// decodeStrict decodes one JSON object into v, refusing fields v does not
// have; prefix names where v sits in the request ("messages[2].").
func decodeStrict(data []byte, v any, prefix string) *Error {
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
