package llm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hybridgroup/yzma/pkg/llama"
)

// ErrContextFull is matched by the error of [Model.Chat] when the prompt
// alone does not fit in the context window ([Options.ContextSize]).
var ErrContextFull = errors.New("llm: prompt does not fit in the context window")

// Message roles.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool" // a tool's result; Message.ToolCallID names the call it answers
)

// Message is one turn of a conversation.
type Message struct {
	Role    string // RoleSystem, RoleUser, RoleAssistant or RoleTool
	Content string // may be empty in an assistant's message with ToolCalls

	ToolCalls  []ToolCall // an assistant's calls
	ToolCallID string     // a tool result's: the ID of the call it answers
	Name       string     // optional: the name of the tool whose result this is
}

// ChatOptions configure one [Model.Chat] call. The defaults are those of
// llama.cpp's command line tools; set Temperature to 0 for greedy,
// deterministic output.
type ChatOptions struct {
	// MaxTokens caps the tokens generated. Default 0: until the model ends
	// its turn or the context window is full.
	MaxTokens int

	Temperature float32 // 0 to 2, default 0.8; 0 picks the most likely token
	TopK        int     // 0 or more, default 40; 0 disables
	TopP        float32 // above 0 to 1, default 0.95; 1 disables
	MinP        float32 // 0 to 1, default 0.05; 0 disables

	// Seed seeds the sampler: the same seed, options and messages give the
	// same answer. Default: a random seed per call.
	Seed uint32

	// NoPrefixReuse evaluates the whole prompt. By default a call reuses
	// llama.cpp's KV cache for the start its prompt shares with the
	// previous call's (in a conversation: the messages before the last
	// answer), and evaluates only the rest. Reuse is exact: greedy answers
	// are the same bits either way (prompts are split at message
	// boundaries so that both evaluate the same batches; see chunkEnds).
	NoPrefixReuse bool

	// Stop ends the answer before the first occurrence of any of these
	// strings. Text that might begin a stop string is held back until it
	// is known not to, so a stop string never reaches the callback, even
	// in part.
	Stop []string

	// PresencePenalty and FrequencyPenalty are OpenAI's penalties, from -2
	// to 2 (default 0, off): a token's logit is lowered by PresencePenalty
	// if it appeared in the last [PenaltyLastN] generated tokens, and by
	// FrequencyPenalty times the number of its appearances there; negative
	// values favour repeats. They are llama.cpp's penalties sampler.
	PresencePenalty  float32
	FrequencyPenalty float32

	// LogitBias adds a bias, from -100 to 100, to the logits of tokens by
	// id before sampling: -100 in effect bans a token, 100 forces it
	// wherever it is allowed. An id outside the vocabulary is an error.
	LogitBias map[int]float32

	// Grammar constrains the answer to a GBNF grammar (llama.cpp's format,
	// start rule "root"), such as [JSONGrammar]. The model can end its turn
	// only where the grammar is complete, so an answer that finishes with
	// "stop" matches it, except when a Stop string cut it short; one cut by
	// MaxTokens is a prefix of a match. An invalid grammar is an error.
	// With GrammarTriggers it applies only from a trigger on.
	Grammar string

	// GrammarTriggers makes Grammar lazy (llama.cpp's
	// llama_sampler_init_grammar_lazy_patterns): the answer is free until
	// its text matches one of these regular expressions (Go's syntax,
	// without case folding, multi-line anchors or character classes that
	// hold some non-ASCII characters; the match may start anywhere).
	// From then on the grammar constrains the answer, and it must match the
	// text from the start of the pattern's first capturing group that
	// matched something, or from the start of the match if none did, to
	// the end of the answer. So `<tool_call>` makes the grammar see
	// "<tool_call>…", and `<tool_call>\s*(\{)` sees "{…". That text must
	// be a start the grammar accepts: if not, Chat returns an error matching
	// ErrBadOption. llama.cpp runs the patterns over all the text since the
	// answer began at every token until one matches: keep them simple.
	GrammarTriggers []string

	// Tools are functions the model may call, rendered through the chat
	// template's tools variable in OpenAI's shape
	// ({"type": "function", "function": {"name", "description",
	// "parameters"}}). Only a model whose own template renders tools takes
	// them ([Model.RendersTools]); the calls come back as text in the
	// template family's syntax ([Model.Template]). Constrain them with
	// Grammar and GrammarTriggers.
	Tools []Tool

	// TopLogprobs, 0 to [MaxTopLogprobs], is how many of the most likely
	// tokens OnLogprob is given with each generated token.
	TopLogprobs int

	// OnLogprob, if set, receives each generated token with its log
	// probability, before the token's text reaches onToken (the
	// end-of-turn token is not given). The probabilities are those of the
	// distribution the token was drawn from after LogitBias, the penalties
	// and Grammar, before TopK, TopP, MinP and Temperature: tokens the
	// grammar forbids have none and are never among the top ones. (OpenAI
	// gives the model's own probabilities.) If it returns an error,
	// generation stops and Chat returns that error.
	OnLogprob func(TokenLogprob) error
}

// Stats describe one [Model.Chat] call.
type Stats struct {
	PromptTokens     int           // tokens in the rendered prompt
	CachedTokens     int           // of those, reused from the previous call's KV cache
	PromptDuration   time.Duration // evaluating the prompt
	GeneratedTokens  int           // tokens generated, without the end-of-turn token
	GenerateDuration time.Duration // generating them, after the prompt
	TimeToFirstToken time.Duration // from the start of the call's work to the first generated token

	// FinishReason says why generation stopped: "stop" (the model ended
	// its turn or a stop string appeared) or "length" (MaxTokens or the
	// context window was reached).
	FinishReason string
}

// PromptTokensPerSecond returns the prompt evaluation speed.
func (s Stats) PromptTokensPerSecond() float64 { return rate(s.PromptTokens, s.PromptDuration) }

// GenerateTokensPerSecond returns the generation speed.
func (s Stats) GenerateTokensPerSecond() float64 { return rate(s.GeneratedTokens, s.GenerateDuration) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Chat renders msgs with the model's chat template and generates the
// assistant's answer, passing it to onToken piece by piece as it is
// generated (pieces are whole UTF-8 characters; a piece may hold several
// tokens, or part of one when a stop string ends it). If onToken returns an
// error, generation stops and Chat returns that error.
//
// Calls on one Model are served one at a time, in no particular order;
// while waiting, a call gives up when ctx is done. Cancelling ctx stops
// generation within one token (or one graph operation of the prompt), and
// Chat returns ctx.Err() with the Stats so far.
func (m *Model) Chat(ctx context.Context, msgs []Message, onToken func(string) error, optFns ...func(*ChatOptions)) (Stats, error) {
	o := ChatOptions{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, Seed: randomSeed()}
	for _, fn := range optFns {
		fn(&o)
	}
	if err := checkOptions(o, int(llama.VocabNTokens(m.vocab))); err != nil {
		return Stats{}, err
	}
	prompt, err := m.tmpl.render(msgs, o.Tools)
	if err != nil {
		return Stats{}, err
	}
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return Stats{}, ctx.Err()
	}
	defer func() { <-m.sem }()
	if m.closed {
		return Stats{}, ErrClosed
	}
	// Stop the C computation as soon as ctx is done. If the flag is being
	// set, wait, so that it cannot be set during the next call.
	m.abort.Store(false)
	aborted := make(chan struct{})
	stopAbort := context.AfterFunc(ctx, func() { m.abort.Store(true); close(aborted) })
	defer func() {
		if !stopAbort() {
			<-aborted
		}
	}()
	if onToken == nil {
		onToken = func(string) error { return nil }
	}
	return m.generate(ctx, prompt, onToken, o)
}

func (m *Model) generate(ctx context.Context, prompt string, onToken func(string) error, o ChatOptions) (st Stats, err error) {
	start := time.Now()
	tokens := m.tokenize(prompt)
	st.PromptTokens = len(tokens)
	if len(tokens) == 0 {
		return st, errors.New("llm: the prompt is no tokens")
	}
	if len(tokens) >= m.ctxSize {
		return st, fmt.Errorf("%w: %d prompt tokens, %d-token context", ErrContextFull, len(tokens), m.ctxSize)
	}
	constrain, pick, err := m.newSampler(o)
	if err != nil {
		return st, err
	}
	smp := &sampler{m: m, constrain: constrain, pick: pick, topN: o.TopLogprobs, logprobs: o.OnLogprob != nil}
	defer smp.free()
	if len(o.GrammarTriggers) > 0 {
		if smp.guard, err = newLazyGuard(m, o.Grammar, o.GrammarTriggers); err != nil {
			return st, err
		}
	}
	mem, err := llama.GetMemory(m.lctx)
	if err != nil {
		return st, fmt.Errorf("llm: %w", err)
	}
	// Keep the KV cache of the chunks this prompt shares with the last
	// one (see chunkEnds); at least the last chunk is evaluated, for the
	// logits of the last token.
	ends := m.chunkEnds(tokens)
	n := 0
	if !o.NoPrefixReuse {
		n = sharedChunks(m.cached, m.chunks, tokens, ends)
	}
	// The cells are cleared, not their data: no cell is read before it is
	// written, and the pages of the empty cache stay given back
	// (kvpages.go).
	if ok, _ := llama.MemorySeqRm(mem, 0, llama.Pos(n), -1); !ok || n == 0 {
		llama.MemoryClear(mem, false)
		n = 0
	}
	st.CachedTokens = n
	m.cached = append(m.cached[:0], tokens[:n]...)
	m.chunks = ends

	// The prompt, chunk by chunk; logits for its last token only.
	for i, end := range ends {
		start := 0
		if i > 0 {
			start = ends[i-1]
		}
		if end <= n {
			continue
		}
		m.batch.Clear()
		for j := start; j < end; j++ {
			m.batch.Add(tokens[j], llama.Pos(j), seq0, j == len(tokens)-1)
		}
		if err := m.decode(ctx); err != nil {
			return st, err
		}
		m.cached = append(m.cached, tokens[start:end]...)
	}
	promptDone := time.Now()
	st.PromptDuration = promptDone.Sub(start)
	defer func() { st.GenerateDuration = time.Since(promptDone) }()

	out := streamer{stop: o.Stop, emit: onToken}
	pos := len(tokens)
	for {
		tok, err := smp.sample()
		if err != nil {
			return st, err
		}
		if m.traceToken != nil {
			m.traceToken(int(tok))
		}
		if st.GeneratedTokens == 0 {
			st.TimeToFirstToken = time.Since(start)
		}
		if llama.VocabIsEOG(m.vocab, tok) {
			st.FinishReason = "stop"
			return st, out.flush()
		}
		st.GeneratedTokens++
		if o.OnLogprob != nil {
			if err := o.OnLogprob(smp.last); err != nil {
				return st, err
			}
		}
		stopped, err := out.write(string(m.piece(tok)))
		if err != nil {
			return st, err
		}
		if stopped {
			st.FinishReason = "stop"
			return st, nil
		}
		if st.GeneratedTokens == o.MaxTokens || pos >= m.ctxSize {
			st.FinishReason = "length"
			return st, out.flush()
		}
		if err := ctx.Err(); err != nil {
			return st, err
		}
		m.batch.Clear()
		m.batch.Add(tok, llama.Pos(pos), seq0, true)
		pos++
		if err := m.decode(ctx); err != nil {
			return st, err
		}
		m.cached = append(m.cached, tok)
	}
}

var seq0 = []llama.SeqId{0}

// piece returns the text of a generated token (a special token's is
// empty).
func (m *Model) piece(tok llama.Token) []byte {
	buf := make([]byte, 64)
	n := llama.TokenToPiece(m.vocab, tok, buf, 0, false)
	if int(n) > len(buf) {
		buf = make([]byte, n)
		n = llama.TokenToPiece(m.vocab, tok, buf, 0, false)
	}
	return buf[:max(n, 0)]
}

// tokenText returns a token's text, special tokens included, for the chat
// template's bos_token and eos_token.
func tokenText(vocab llama.Vocab, tok llama.Token) string {
	if tok < 0 {
		return ""
	}
	buf := make([]byte, 256)
	n := llama.TokenToPiece(vocab, tok, buf, 0, true)
	return string(buf[:max(min(int(n), len(buf)), 0)])
}

// tokenize tokenizes a prompt, with the BOS token if the model asks for
// it and the chat template's special tokens parsed. yzma hands llama.cpp
// the text as a C string, so a NUL byte (which a model can generate, and
// which comes back in a later turn) is put in as the vocabulary's byte
// token between the tokens of the text around it.
func (m *Model) tokenize(prompt string) []llama.Token {
	if strings.IndexByte(prompt, 0) < 0 {
		return llama.Tokenize(m.vocab, prompt, true, true)
	}
	nul, ok := m.nulToken()
	if !ok {
		prompt = strings.ReplaceAll(prompt, "\x00", "")
	}
	var tokens []llama.Token
	for i, part := range strings.Split(prompt, "\x00") {
		if i > 0 && ok {
			tokens = append(tokens, nul)
		}
		if part != "" || i == 0 {
			tokens = append(tokens, llama.Tokenize(m.vocab, part, i == 0, true)...)
		}
	}
	return tokens
}

// nulToken returns the token whose text is the byte 0: a byte token of
// byte-level BPE ("Ā") or SentencePiece ("<0x00>") vocabularies, found
// among the first ids where they sit.
func (m *Model) nulToken() (llama.Token, bool) {
	buf := make([]byte, 8)
	for id := range min(int(llama.VocabNTokens(m.vocab)), 4096) {
		if n := llama.TokenToPiece(m.vocab, llama.Token(id), buf, 0, true); n == 1 && buf[0] == 0 {
			return llama.Token(id), true
		}
	}
	return 0, false
}

// minChunk is the fewest tokens a prompt chunk has before it may end at a
// special token (see chunkEnds).
const minChunk = 64

// chunkEnds splits a prompt into the chunks that are evaluated together,
// and returns where each ends (the last at len(tokens)). A chunk ends
// before a special token (one of the chat template's, which start and end
// the messages) once it has minChunk tokens, and at batchMax tokens.
//
// The split is what makes prompt reuse exact. llama.cpp's quantized
// kernels round a token's values differently depending on the batch it
// is evaluated in (groups of rows take one path, the rest another), so a
// KV cache filled in other batches than a fresh evaluation would use
// gives other logits, and greedy answers drift apart after a few tokens.
// Here each split depends only on the tokens before it, so two prompts
// that start alike are split alike over their common start; keeping the
// cache of whole shared chunks (sharedChunks) and evaluating the rest in
// the same chunks as a fresh evaluation gives the same bits as evaluating
// the prompt from scratch. The price is one more small llama_decode per
// prompt, for the chunk after the last special token.
func (m *Model) chunkEnds(tokens []llama.Token) []int {
	var ends []int
	start := 0
	for i := 1; i < len(tokens); i++ {
		if i-start == m.batchMax || i-start >= minChunk && m.special(tokens[i]) {
			ends = append(ends, i)
			start = i
		}
	}
	return append(ends, len(tokens))
}

func (m *Model) special(tok llama.Token) bool {
	return llama.VocabGetAttr(m.vocab, tok)&(llama.TokenAttrControl|llama.TokenAttrUserDef) != 0
}

// sharedChunks returns how many tokens of a prompt split at ends can be
// kept from a KV cache that holds cached, whose prompt was split at
// cachedEnds: the end of the last chunk both prompts have, token for
// token, short of the prompt's last chunk.
func sharedChunks(cached []llama.Token, cachedEnds []int, tokens []llama.Token, ends []int) int {
	common := 0
	for common < len(cached) && common < len(tokens) && cached[common] == tokens[common] {
		common++
	}
	n := 0
	for _, e := range ends[:len(ends)-1] {
		if e > common {
			break
		}
		if _, found := slices.BinarySearch(cachedEnds, e); found {
			n = e
		}
	}
	return n
}

// decode runs the batch. llama_decode returns 2 when the abort callback
// stopped it, 1 when the KV cache has no room.
func (m *Model) decode(ctx context.Context) error {
	rc, err := llama.Decode(m.lctx, m.batch)
	if err == nil && rc == 0 {
		return nil
	}
	if m.abort.Load() {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
	}
	if err == nil {
		err = fmt.Errorf("llama_decode returned %d", rc)
	}
	return fmt.Errorf("llm: decode: %w", err)
}

// streamer passes generated text on, holding back what could be the start
// of a stop string or of a UTF-8 character split across tokens.
type streamer struct {
	stop    []string
	emit    func(string) error
	pending string
}

// write adds text and reports whether a stop string was reached.
func (s *streamer) write(text string) (bool, error) {
	s.pending += text
	cut, stopped := len(s.pending), false
	for _, stop := range s.stop {
		if i := strings.Index(s.pending, stop); i >= 0 && i < cut {
			cut, stopped = i, true
		}
	}
	if stopped {
		s.pending = s.pending[:cut]
		return true, s.flush()
	}
	hold := 0
	for _, stop := range s.stop {
		hold = max(hold, overlap(s.pending, stop))
	}
	hold = max(hold, partialRune(s.pending))
	return false, s.send(len(s.pending) - hold)
}

// flush passes on everything held back.
func (s *streamer) flush() error { return s.send(len(s.pending)) }

func (s *streamer) send(n int) error {
	if n <= 0 {
		return nil
	}
	text := s.pending[:n]
	s.pending = s.pending[n:]
	return s.emit(text)
}

// overlap returns the length of the longest suffix of s that is a proper
// prefix of stop.
func overlap(s, stop string) int {
	for n := min(len(s), len(stop)-1); n > 0; n-- {
		if strings.HasSuffix(s, stop[:n]) {
			return n
		}
	}
	return 0
}

// partialRune returns the length of an incomplete UTF-8 sequence at the end
// of s: bytes that the next token may complete.
func partialRune(s string) int {
	for n := 1; n <= min(len(s), utf8.UTFMax-1); n++ {
		c := s[len(s)-n]
		if utf8.RuneStart(c) {
			if !utf8.FullRuneInString(s[len(s)-n:]) {
				return n
			}
			return 0
		}
	}
	return 0
}
