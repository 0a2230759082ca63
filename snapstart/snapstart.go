// Package snapstart drives Lambda SnapStart's snapshot lifecycle for a
// function whose runtime is its own: a Go bootstrap in a container image on
// provided.al2023, where Lambda takes the snapshot only once the runtime
// asks for it (docs: snapstart-runtime-hooks-custom).
//
// Register hooks on a [Hooks], finish the function's init, call
// [Hooks.Checkpoint], then start the usual loop (lambda.Start,
// lambdaurl.Start). Under SnapStart (AWS_LAMBDA_INITIALIZATION_TYPE is
// snap-start) Checkpoint runs the before-snapshot hooks, calls the Runtime
// API's GET /runtime/restore/next, where Lambda takes the snapshot and
// which returns in each environment restored from it, then runs the
// after-restore hooks there. Under any other init type it does nothing, so
// one binary serves a zip, provisioned concurrency and SnapStart alike.
//
// Everything made during init is shared by every environment restored
// from one snapshot: the after-restore hooks renew what must be unique or
// fresh (random state outside crypto/rand, ids, credentials, connections,
// secrets that rotate); before-snapshot hooks let go of what should not be
// in the snapshot (idle connections, secrets).
package snapstart

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"
)

// Hooks holds the hooks to run around the snapshot. The zero value has
// none and is ready to use; a Hooks is not safe for concurrent use.
type Hooks struct {
	// Logger receives a line at the snapshot point and one after the
	// restore (default: none).
	Logger *slog.Logger

	before, after []func(context.Context) error
}

// InitTypeEnv names the environment variable Lambda sets to the init type:
// "on-demand", "provisioned-concurrency" or "snap-start".
const InitTypeEnv = "AWS_LAMBDA_INITIALIZATION_TYPE"

// Enabled reports whether this process is being initialised for a
// SnapStart snapshot.
func Enabled() bool { return os.Getenv(InitTypeEnv) == "snap-start" }

// BeforeSnapshot adds a hook to run before the snapshot is taken. Hooks
// run in the reverse order of their registration, as Lambda's Java, Python
// and .NET runtimes run theirs: the last resource set up is the first let
// go.
func (h *Hooks) BeforeSnapshot(fn func(context.Context) error) { h.before = append(h.before, fn) }

// AfterRestore adds a hook to run in each environment restored from the
// snapshot, before it takes its first invocation. Hooks run in the order
// of their registration. Lambda gives the restore phase 10 seconds.
func (h *Hooks) AfterRestore(fn func(context.Context) error) { h.after = append(h.after, fn) }

// HookError is the error of hooks that failed; Checkpoint has reported it
// to Lambda.
type HookError struct {
	Phase string // "before snapshot" or "after restore"
	Err   error  // the hooks' errors, joined
}

func (e *HookError) Error() string { return "snapstart: " + e.Phase + " hook: " + e.Err.Error() }
func (e *HookError) Unwrap() error { return e.Err }

// Checkpoint runs the snapshot lifecycle when the function is initialised
// for SnapStart, and returns nil at once otherwise.
//
// It runs every before-snapshot hook, calls GET
// /2018-06-01/runtime/restore/next on AWS_LAMBDA_RUNTIME_API (the snapshot
// is taken while that call waits; it returns in a restored environment),
// then runs every after-restore hook. A failed before-snapshot hook is
// reported to /runtime/init/error (no snapshot is taken: the init
// failed), a failed after-restore hook to /runtime/restore/error, both with
// Lambda's error body ({"errorMessage", "errorType"}), and Checkpoint then
// returns a *HookError: the process should exit, and Lambda discards the
// environment. On a nil error, start the function's invocation loop.
func (h *Hooks) Checkpoint(ctx context.Context) error {
	if !Enabled() {
		return nil
	}
	api := os.Getenv("AWS_LAMBDA_RUNTIME_API")
	if api == "" {
		return errors.New("snapstart: " + InitTypeEnv + " is snap-start but AWS_LAMBDA_RUNTIME_API is not set")
	}
	// A client of its own: nothing of it outlives Checkpoint, so no
	// connection of the function's is held across the snapshot.
	rt := &runtimeAPI{base: "http://" + api + "/2018-06-01/runtime/", client: &http.Client{Transport: &http.Transport{}}}
	defer rt.client.CloseIdleConnections()
	log := h.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	start := time.Now()
	if err := runHooks(ctx, h.before, true); err != nil {
		herr := &HookError{Phase: "before snapshot", Err: err}
		log.Error("snapstart: reporting to init/error", "err", herr)
		return errors.Join(herr, rt.report(ctx, "init/error", "Runtime.BeforeSnapshotError", herr))
	}
	log.Info("snapstart: snapshot point: waiting for Lambda's restore", "before_snapshot_hooks", len(h.before),
		"hooks_ms", float64(time.Since(start).Microseconds())/1000)
	if err := rt.restoreNext(ctx); err != nil {
		return err
	}
	restored := time.Now()
	if err := runHooks(ctx, h.after, false); err != nil {
		herr := &HookError{Phase: "after restore", Err: err}
		log.Error("snapstart: reporting to restore/error", "err", herr)
		return errors.Join(herr, rt.report(ctx, "restore/error", "Runtime.AfterRestoreError", herr))
	}
	log.Info("snapstart: restored", "after_restore_hooks", len(h.after),
		"hooks_ms", float64(time.Since(restored).Microseconds())/1000)
	return nil
}

// runHooks runs every hook, in reverse if reverse is set, and joins their
// errors: one failed hook does not keep the others from running.
func runHooks(ctx context.Context, hooks []func(context.Context) error, reverse bool) error {
	var errs []error
	for i := range hooks {
		if reverse {
			i = len(hooks) - 1 - i
		}
		if err := hooks[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// runtimeAPI is the part of the Lambda Runtime API Checkpoint needs.
type runtimeAPI struct {
	base   string
	client *http.Client
}

func (rt *runtimeAPI) restoreNext(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rt.base+"restore/next", nil)
	if err != nil {
		return fmt.Errorf("snapstart: restore/next: %w", err)
	}
	return rt.do(req, "restore/next")
}

// report posts err to the Runtime API's path (init/error, restore/error).
func (rt *runtimeAPI) report(ctx context.Context, path, errorType string, err error) error {
	body, _ := json.Marshal(struct {
		Message string `json:"errorMessage"`
		Type    string `json:"errorType"`
	}{err.Error(), errorType})
	req, rerr := http.NewRequestWithContext(ctx, http.MethodPost, rt.base+path, bytes.NewReader(body))
	if rerr != nil {
		return fmt.Errorf("snapstart: %s: %w", path, rerr)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Lambda-Runtime-Function-Error-Type", errorType)
	return rt.do(req, path)
}

func (rt *runtimeAPI) do(req *http.Request, path string) error {
	resp, err := rt.client.Do(req)
	if err != nil {
		return fmt.Errorf("snapstart: %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("snapstart: %s: the Runtime API answered %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}
