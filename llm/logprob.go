package llm

import (
	"errors"
	"math"
	"slices"

	"github.com/hybridgroup/yzma/pkg/llama"
)

// MaxTopLogprobs is the most [ChatOptions.TopLogprobs] can ask for, as in
// OpenAI's API.
const MaxTopLogprobs = 20

// TokenLogprob is a generated token with its log probability, for
// [ChatOptions.OnLogprob].
type TokenLogprob struct {
	Token   string       // the token's text (its bytes, which may be part of a UTF-8 character)
	Bytes   []byte       // the same bytes
	Logprob float64      // natural log of its probability
	Top     []TopLogprob // the ChatOptions.TopLogprobs most likely tokens, most likely first
}

// TopLogprob is one of the most likely tokens at a position, most likely
// first ([ChatOptions.TopLogprobs] of them).
type TopLogprob struct {
	Token   string  // the token's text
	Bytes   []byte  // the same bytes
	Logprob float64 // natural log of its probability
}

// sampler picks the tokens of one Chat call. Without OnLogprob or a lazy
// grammar it is one llama.cpp chain that llama_sampler_sample runs; with
// them, two chains run here one after the other, so that the distribution
// after the constraints can be read between them, and a token can be
// checked (lazyGuard) before the constraints accept it.
type sampler struct {
	m         *Model
	constrain llama.Sampler // the whole chain, or the constraints only
	pick      llama.Sampler // with OnLogprob or a lazy grammar: the rest
	guard     *lazyGuard    // with a lazy grammar
	logprobs  bool          // OnLogprob is set
	topN      int
	cur       []llama.TokenData
	logits    []float32    // by token id: the logits after the constraints
	norm      float64      // log of the sum of their exponentials
	last      TokenLogprob // the last sampled token's, with OnLogprob
}

func (s *sampler) free() {
	llama.SamplerFree(s.constrain)
	if s.pick != 0 {
		llama.SamplerFree(s.pick)
	}
}

// sample picks the next token and accepts it into the chains.
func (s *sampler) sample() (llama.Token, error) {
	if s.pick == 0 {
		// llama_sampler_sample also accepts the token into the chain.
		return llama.SamplerSample(s.constrain, s.m.lctx, -1), nil
	}
	nVocab := int(llama.VocabNTokens(s.m.vocab))
	logits, err := llama.GetLogitsIth(s.m.lctx, -1, nVocab)
	if err != nil || len(logits) < nVocab {
		return 0, errors.New("llm: llama.cpp gave no logits")
	}
	if cap(s.cur) < nVocab {
		s.cur = make([]llama.TokenData, nVocab)
	}
	cur := s.cur[:nVocab]
	if len(s.logits) < nVocab {
		s.logits = make([]float32, nVocab)
	}
	for i := range cur {
		cur[i] = llama.TokenData{Id: llama.Token(i), Logit: logits[i]}
	}
	arr := llama.TokenDataArray{Data: &cur[0], Size: uint64(nVocab), Selected: -1}
	llama.SamplerApply(s.constrain, &arr)
	if s.logprobs {
		s.last = s.logprobsOf(cur[:arr.Size])
	}
	arr.Selected = -1
	llama.SamplerApply(s.pick, &arr)
	if arr.Data != &cur[0] || arr.Selected < 0 || uint64(arr.Selected) >= arr.Size {
		return 0, errors.New("llm: llama.cpp's sampler selected no token")
	}
	tok := cur[arr.Selected].Id
	if s.guard != nil {
		if err := s.guard.check(tok); err != nil {
			return 0, err
		}
	}
	llama.SamplerAccept(s.constrain, tok)
	llama.SamplerAccept(s.pick, tok)
	if s.logprobs {
		s.last.Logprob = float64(s.logits[tok]) - s.norm
		s.last.Bytes = s.m.piece(tok)
		s.last.Token = string(s.last.Bytes)
	}
	return tok, nil
}

// logprobsOf computes the log-softmax of the constrained logits and keeps
// the topN most likely tokens; tokens at -inf (forbidden) have none.
func (s *sampler) logprobsOf(cur []llama.TokenData) TokenLogprob {
	maxLogit := math.Inf(-1)
	for _, t := range cur {
		maxLogit = max(maxLogit, float64(t.Logit))
	}
	sum := 0.0
	for _, t := range cur {
		sum += math.Exp(float64(t.Logit) - maxLogit)
	}
	s.norm = maxLogit + math.Log(sum)
	for _, t := range cur {
		s.logits[t.Id] = t.Logit
	}
	var out TokenLogprob
	if s.topN == 0 {
		return out
	}
	top := make([]llama.TokenData, 0, s.topN+1)
	for _, t := range cur {
		if math.IsInf(float64(t.Logit), -1) || len(top) == s.topN && t.Logit <= top[len(top)-1].Logit {
			continue
		}
		i, _ := slices.BinarySearchFunc(top, t.Logit, func(e llama.TokenData, l float32) int {
			if e.Logit > l {
				return -1
			}
			return 1
		})
		top = slices.Insert(top, i, t)
		if len(top) > s.topN {
			top = top[:s.topN]
		}
	}
	for _, t := range top {
		b := s.m.piece(t.Id)
		out.Top = append(out.Top, TopLogprob{Token: string(b), Bytes: b, Logprob: float64(t.Logit) - s.norm})
	}
	return out
}
