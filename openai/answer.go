package openai

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/memload/memload/llm"
)

// The answers' wire shapes, non-streamed and streamed.

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
	Logprobs     *choiceLogprobs  `json:"logprobs,omitempty"`
	FinishReason *string          `json:"finish_reason"`
}

// responseMessage is the answer of a non-streamed request. Content is
// null when the answer is tool calls alone, as OpenAI's is.
type responseMessage struct {
	Role             string     `json:"role"`
	Content          *string    `json:"content"`
	ReasoningContent string     `json:"reasoning_content,omitempty"` // a thinking model's reasoning
	ToolCalls        []toolCall `json:"tool_calls,omitempty"`
}

type toolCall struct {
	Index    *int   `json:"index,omitempty"` // in a delta only
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type chatDelta struct {
	Role             string     `json:"role,omitempty"`
	Content          string     `json:"content,omitempty"`
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []toolCall `json:"tool_calls,omitempty"`
}

type choiceLogprobs struct {
	Content []logprob `json:"content"`
	Refusal []logprob `json:"refusal"` // always null: answers are content
}

type logprob struct {
	Token       string       `json:"token"`
	Logprob     float64      `json:"logprob"`
	Bytes       []int        `json:"bytes"` // OpenAI's bytes are numbers, not base64
	TopLogprobs []topLogprob `json:"top_logprobs"`
}

type topLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

func logprobOf(t TokenLogprob) logprob {
	l := logprob{Token: t.Token, Logprob: t.Logprob, Bytes: byteInts(t.Bytes), TopLogprobs: []topLogprob{}}
	for _, a := range t.Top {
		l.TopLogprobs = append(l.TopLogprobs, topLogprob{Token: a.Token, Logprob: a.Logprob, Bytes: byteInts(a.Bytes)})
	}
	return l
}

func byteInts(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

type usage struct {
	PromptTokens        int            `json:"prompt_tokens"`
	CompletionTokens    int            `json:"completion_tokens"`
	TotalTokens         int            `json:"total_tokens"`
	PromptTokensDetails promptTokenUse `json:"prompt_tokens_details"`
}

type promptTokenUse struct {
	CachedTokens int `json:"cached_tokens"` // reused from the previous call's KV cache
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
	return &usage{PromptTokens: st.PromptTokens, CompletionTokens: st.GeneratedTokens, TotalTokens: st.PromptTokens + st.GeneratedTokens,
		PromptTokensDetails: promptTokenUse{CachedTokens: st.CachedTokens}}
}

func timingsOf(st llm.Stats) *timings {
	return &timings{
		PromptN: st.PromptTokens, PromptMS: ms(st.PromptDuration), PromptPerSecond: st.PromptTokensPerSecond(),
		PredictedN: st.GeneratedTokens, PredictedMS: ms(st.GenerateDuration), PredictedPerSecond: st.GenerateTokensPerSecond(),
		FirstTokenMS: ms(st.TimeToFirstToken),
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

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

	logprobs []logprob // not yet sent with a delta
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
func (a *answer) delta(d *chatDelta) error {
	if !a.roleSent {
		a.roleSent = true
		if err := a.event(a.chunk(&chatDelta{Role: llm.RoleAssistant}, nil)); err != nil {
			return err
		}
	}
	return a.event(a.withLogprobs(a.chunk(d, nil)))
}

// withLogprobs gives a chunk the log probabilities of the tokens since the
// last one.
func (a *answer) withLogprobs(c chatResponse) chatResponse {
	if len(a.logprobs) > 0 {
		c.Choices[0].Logprobs = &choiceLogprobs{Content: a.logprobs}
		a.logprobs = nil
	}
	return c
}

// finish ends a streamed answer.
func (a *answer) finish(st llm.Stats, reason string, includeUsage bool) {
	if !a.roleSent {
		a.roleSent = true
		a.event(a.chunk(&chatDelta{Role: llm.RoleAssistant}, nil))
	}
	last := a.withLogprobs(a.chunk(&chatDelta{}, &reason))
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
func (a *answer) fail(e *Error) {
	if !a.started {
		if e.Status == 499 {
			return // nobody to tell
		}
		WriteError(a.w, e)
		return
	}
	a.event(struct {
		Error *Error `json:"error"`
	}{e})
	a.write([]byte("data: [DONE]\n\n"))
}
