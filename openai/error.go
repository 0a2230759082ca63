package openai

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode"

	"github.com/memload/memload/llm"
)

// Error is an error answer in OpenAI's shape, with its HTTP status.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    string `json:"code,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// WriteError writes e as OpenAI does, with the headers that tell OpenAI's
// SDKs whether to retry.
func WriteError(w http.ResponseWriter, e *Error) {
	// The SDKs retry 408, 409, 429 and 5xx unless told otherwise.
	switch {
	case e.Status == http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
		w.Header().Set("X-Should-Retry", "true")
	case e.Status == http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "5")
		w.Header().Set("X-Should-Retry", "true")
	case e.Status < 500, e.Code == "model_load_failed":
		// The same request gets the same answer; a model that failed to
		// load has had its retries already.
		w.Header().Set("X-Should-Retry", "false")
	}
	writeJSON(w, e.Status, struct {
		Error *Error `json:"error"`
	}{e})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func badRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: fmt.Sprintf(format, args...)}
}

// unsupported refuses a field, saying why.
func unsupported(param, why string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "unsupported_parameter", Param: param,
		Message: fmt.Sprintf("`%s` is not supported: %s", param, why)}
}

// optionParams names the request field behind each of llm's ChatOptions.
var optionParams = map[string]string{
	"MaxTokens": "max_tokens", "Temperature": "temperature", "TopK": "top_k", "TopP": "top_p", "MinP": "min_p",
	"Seed": "seed", "Stop": "stop", "PresencePenalty": "presence_penalty", "FrequencyPenalty": "frequency_penalty",
	"LogitBias": "logit_bias", "Grammar": "response_format", "Tools": "tools", "GrammarTriggers": "tools",
	"TopLogprobs": "top_logprobs", "OnLogprob": "logprobs",
}

// badOption turns llm's refusal of an option (llm.ErrBadOption, whose
// message names the ChatOptions field) into a 400 naming the request's.
func badOption(err error) *Error {
	msg := strings.TrimPrefix(err.Error(), llm.ErrBadOption.Error()+": ")
	e := badRequest("%s", msg)
	for _, word := range strings.FieldsFunc(msg, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		if p, ok := optionParams[word]; ok {
			e.Param = p
			e.Message = fmt.Sprintf("%s: %s", p, msg)
			break
		}
	}
	return e
}
