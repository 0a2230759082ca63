package llm

// llama.cpp's reason for refusing a model.
//
// llama.cpp says why it cannot load a model only in its log; its API
// returns a null model. The load's session (session.go) keeps its last
// warning and error lines, so that the error of Load carries the reason
// and is classified: a file llama.cpp refuses is an invalid model, unless
// the reason is memory or the file's reading.

import (
	"fmt"
	"regexp"
	"strings"
)

// reason returns llama.cpp's last error line of the session (its last
// warning if it logged no error), without the name of the function that
// logged it; "" if it logged neither.
func (s *loadSession) reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	// llama.cpp ends a refusal with lines that only say it failed
	// ("failed to load model"): the line before says why.
	for i := len(s.lines) - 1; i >= 0; i-- {
		line := strings.TrimPrefix(funcPrefix.ReplaceAllString(s.lines[i], ""), "error loading model: ")
		if line != "" && !genericFailure.MatchString(line) {
			return line
		}
	}
	return ""
}

// forget drops the lines recorded so far, so that a later step's failure
// is not explained by an earlier step's warnings.
func (s *loadSession) forget() {
	s.mu.Lock()
	s.lines = nil
	s.mu.Unlock()
}

var (
	funcPrefix     = regexp.MustCompile(`^[a-z_0-9:]+: `)
	genericFailure = regexp.MustCompile(`^(failed to load model|error loading model: ?|failed to initialize model|llama_model_load: .*|Failed to load model)$`)
	// Reasons that are the machine's, not the file's.
	notTheFile = regexp.MustCompile(`(?i)(allocat|out of memory|cannot allocate memory|mmap failed|failed to mmap|failed to open|no such file|permission denied|resource temporarily unavailable)`)
)

// refused returns the error of a load llama.cpp gave up on (what is its
// API's error): [ErrInvalidModel] with llama.cpp's reason, unless the
// reason is memory or reading the file.
func (s *loadSession) refused(path, what string, err error) error {
	reason := s.reason()
	if reason == "" {
		return fmt.Errorf("llm: llama.cpp %s %s (set Options.Logger to see why): %w", what, path, err)
	}
	if notTheFile.MatchString(reason) {
		return fmt.Errorf("llm: llama.cpp %s %s: %s: %w", what, path, reason, err)
	}
	return fmt.Errorf("%w %s: llama.cpp %s it: %s", ErrInvalidModel, path, what, reason)
}
