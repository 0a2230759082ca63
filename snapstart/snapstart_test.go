package snapstart

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

// runtimeStandIn stands in for Lambda's Runtime API (nothing real runs
// here): it records the calls in order with the error bodies, and answers
// restore/next with next's status.
type runtimeStandIn struct {
	mu     sync.Mutex
	events *[]string
	errors map[string]map[string]string // path -> the JSON body
	types  map[string]string            // path -> Lambda-Runtime-Function-Error-Type
	next   int
}

func standIn(t *testing.T, events *[]string, initType string) *runtimeStandIn {
	t.Helper()
	s := &runtimeStandIn{events: events, errors: map[string]map[string]string{}, types: map[string]string{}, next: http.StatusOK}
	mux := http.NewServeMux()
	const p = "/2018-06-01/runtime/"
	mux.HandleFunc("GET "+p+"restore/next", func(w http.ResponseWriter, r *http.Request) {
		s.record("restore/next")
		w.WriteHeader(s.next)
	})
	for _, path := range []string{"init/error", "restore/error"} {
		mux.HandleFunc("POST "+p+path, func(w http.ResponseWriter, r *http.Request) {
			var body map[string]string
			b, _ := io.ReadAll(r.Body)
			if err := json.Unmarshal(b, &body); err != nil {
				t.Errorf("%s body %q: %v", path, b, err)
			}
			s.mu.Lock()
			s.errors[path], s.types[path] = body, r.Header.Get("Lambda-Runtime-Function-Error-Type")
			s.mu.Unlock()
			s.record(path)
			w.WriteHeader(http.StatusAccepted)
		})
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Setenv("AWS_LAMBDA_RUNTIME_API", strings.TrimPrefix(srv.URL, "http://"))
	t.Setenv(InitTypeEnv, initType)
	return s
}

func (s *runtimeStandIn) record(e string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.events = append(*s.events, e)
}

// hook returns a hook that records name, failing with err.
func hook(s *runtimeStandIn, name string, err error) func(context.Context) error {
	return func(context.Context) error { s.record(name); return err }
}

func TestCheckpoint(t *testing.T) {
	errCreds := errors.New("no credentials")
	errClose := errors.New("close failed")
	for _, tc := range []struct {
		name       string
		initType   string
		next       int
		failBefore error
		failAfter  error
		want       []string
		wantErr    string // substring; "" for none
		reported   string // the error path reported to
	}{
		{name: "on-demand does nothing", initType: "on-demand", want: nil},
		{name: "provisioned does nothing", initType: "provisioned-concurrency", want: nil},
		{name: "snap-start", initType: "snap-start",
			want: []string{"before2", "before1", "restore/next", "after1", "after2"}},
		{name: "before-snapshot hook fails", initType: "snap-start", failBefore: errClose,
			want: []string{"before2", "before1", "init/error"}, wantErr: "before snapshot hook: close failed", reported: "init/error"},
		{name: "after-restore hook fails", initType: "snap-start", failAfter: errCreds,
			want: []string{"before2", "before1", "restore/next", "after1", "after2", "restore/error"}, wantErr: "after restore hook: no credentials", reported: "restore/error"},
		{name: "restore/next refused", initType: "snap-start", next: http.StatusForbidden,
			want: []string{"before2", "before1", "restore/next"}, wantErr: "restore/next: the Runtime API answered 403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var events []string
			s := standIn(t, &events, tc.initType)
			if tc.next != 0 {
				s.next = tc.next
			}
			var h Hooks
			h.BeforeSnapshot(hook(s, "before1", tc.failBefore))
			h.BeforeSnapshot(hook(s, "before2", nil))
			h.AfterRestore(hook(s, "after1", tc.failAfter))
			h.AfterRestore(hook(s, "after2", nil))
			err := h.Checkpoint(context.Background())
			if !slices.Equal(events, tc.want) {
				t.Errorf("calls %v, want %v", events, tc.want)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Checkpoint: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Checkpoint: %v, want %q", err, tc.wantErr)
			}
			if tc.reported == "" {
				return
			}
			var herr *HookError
			if !errors.As(err, &herr) || (!errors.Is(err, errCreds) && !errors.Is(err, errClose)) {
				t.Errorf("error %v: want a *HookError wrapping the hook's error", err)
			}
			wantType := map[string]string{"init/error": "Runtime.BeforeSnapshotError", "restore/error": "Runtime.AfterRestoreError"}[tc.reported]
			body := s.errors[tc.reported]
			if s.types[tc.reported] != wantType || body["errorType"] != wantType || !strings.Contains(body["errorMessage"], tc.wantErr) {
				t.Errorf("reported %s %v to %s, want %s and the message", s.types[tc.reported], body, tc.reported, wantType)
			}
		})
	}
}

func TestCheckpointNoRuntimeAPI(t *testing.T) {
	t.Setenv(InitTypeEnv, "snap-start")
	t.Setenv("AWS_LAMBDA_RUNTIME_API", "")
	ran := false
	var h Hooks
	h.BeforeSnapshot(func(context.Context) error { ran = true; return nil })
	if err := h.Checkpoint(context.Background()); err == nil || !strings.Contains(err.Error(), "AWS_LAMBDA_RUNTIME_API") || ran {
		t.Errorf("Checkpoint: %v (hooks ran: %v), want an error naming AWS_LAMBDA_RUNTIME_API before any hook", err, ran)
	}
}

// TestCheckpointCancel: a cancelled context ends the wait at restore/next.
func TestCheckpointCancel(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(block) })
	t.Setenv(InitTypeEnv, "snap-start")
	t.Setenv("AWS_LAMBDA_RUNTIME_API", strings.TrimPrefix(srv.URL, "http://"))
	ctx, cancel := context.WithCancel(context.Background())
	var h Hooks
	h.BeforeSnapshot(func(context.Context) error { cancel(); return nil })
	if err := h.Checkpoint(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Checkpoint: %v, want context.Canceled", err)
	}
}
