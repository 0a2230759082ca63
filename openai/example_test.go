package openai_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/memload/memload/llm"
	"github.com/memload/memload/openai"
)

// echo stands in for an *llm.Model: it answers with the last message.
type echo struct{}

func (echo) Template() string { return llm.TemplateChatML }
func (echo) Thinks() bool     { return false }
func (echo) Chat(ctx context.Context, msgs []openai.Message, onToken func(string) error, optFns ...func(*openai.ChatOptions)) (llm.Stats, error) {
	last := msgs[len(msgs)-1].Content
	return llm.Stats{PromptTokens: 5, GeneratedTokens: 1, FinishReason: "stop"}, onToken(last)
}

// A Handler serves OpenAI's API for one model; under Lambda, serve it with
// lambdaurl.Start(h) instead.
func ExampleHandler() {
	h := &openai.Handler{
		Name:      "my-model",
		MaxTokens: 512,
		Model: func(ctx context.Context, progress func(string)) (openai.Model, error) {
			return echo{}, nil // or the *llm.Model, once it is loaded
		},
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"my-model","messages":[{"role":"user","content":"Hello"}]}`))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Choices []struct {
			Message      struct{ Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			TotalTokens int `json:"total_tokens"`
		}
	}
	json.NewDecoder(resp.Body).Decode(&answer)
	fmt.Println(answer.Choices[0].Message.Content, answer.Choices[0].FinishReason, answer.Usage.TotalTokens)
	// Output: Hello stop 6
}
