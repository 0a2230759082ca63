// Package lambdart is a stand-in, for tests, for AWS Lambda running a
// provided.al2023 function behind a Function URL in RESPONSE_STREAM mode.
// Nothing real can run here: Lambda's own runtime emulator (aws-lambda-rie)
// hands the client a streamed response only once it is complete.
//
// [Start] runs a bootstrap as Lambda does: a clean environment with the
// AWS_LAMBDA_* variables, its directory as LAMBDA_TASK_ROOT, and the
// Runtime API on 127.0.0.1. An HTTP request to [Function.URL] becomes a
// Function URL event (payload version 2.0) handed out by
// /runtime/invocation/next; the response, posted to
// /runtime/invocation/{id}/response with a chunked body, is passed on to the
// client chunk by chunk as it arrives: the prelude (JSON status, headers
// and cookies, then 8 NUL bytes) of the
// application/vnd.awslambda.http-integration-response content type becomes
// the HTTP status and headers, the rest the body. As on a Function URL, the
// first 6 MB go out at full speed and the rest at about 2 MB/s, and a
// response over 20 MiB is cut.
//
// The lifecycle follows Lambda's documentation (the execution environment
// lifecycle, runtimes-api): an on-demand environment starts on the first
// request; its init phase ends when the runtime first asks for
// /invocation/next, and may last 10 s. An init that fails (POST
// /runtime/init/error, or the process exits) or runs out of time is
// reported and retried once, within the invocation, with the function's
// timeout. An invocation that outlives the timeout has its environment
// killed. Between invocations the environment is frozen (SIGSTOP), as
// Lambda freezes it, so nothing runs in the background. With Provisioned,
// the environment starts at once and its init may last the function's
// timeout, at least 130 s.
//
// With SnapStart (a published version of a container image that drives the
// lifecycle itself, snapstart-runtime-hooks-custom), the environment starts
// at once with AWS_LAMBDA_INITIALIZATION_TYPE=snap-start, and its init may
// last the function's timeout, at least 130 s (up to Lambda's 15 minutes).
// The init ends when the runtime calls GET /runtime/restore/next: the
// snapshot is taken there, which here means the process is frozen (CRIU
// cannot run here, so the snapshot is the process itself: it can be
// restored once). The first request restores it: restore/next returns, and
// the restore phase ends when the runtime asks for /invocation/next, within
// 10 s; a POST /runtime/restore/error, an exit or a timeout fails it, the
// environment is killed and requests get 502. The execution role's
// credentials come from a container credentials endpoint
// (AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN),
// as under SnapStart, when Options.Credentials is set.
//
// One execution environment serves one request at a time; a request that
// arrives while it is busy gets 429, as a function with a concurrency of 1.
package lambdart

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"golang.org/x/sys/unix"
)

// Options configure [Start]. Zero values take Lambda's defaults.
type Options struct {
	// Env is the function's environment (the template's Variables, and
	// anything a test points elsewhere); it overrides Lambda's own.
	Env map[string]string
	// MemoryMB is AWS_LAMBDA_FUNCTION_MEMORY_SIZE (default 2048). It is
	// not enforced.
	MemoryMB int
	// Timeout is the function's timeout (default 60 s; Lambda's is 3 s).
	Timeout time.Duration
	// InitTimeout is the init phase's limit on demand (default 10 s).
	// Provisioned and SnapStart inits have the function's timeout, at
	// least 130 s (Lambda's limit is 15 minutes, the longest timeout).
	InitTimeout time.Duration
	// Provisioned makes the environment a provisioned-concurrency one.
	Provisioned bool
	// SnapStart makes the environment a SnapStart one: its init runs at
	// once, up to the snapshot (GET /runtime/restore/next), and the first
	// request restores it.
	SnapStart bool
	// RestoreTimeout is the restore phase's limit (default 10 s).
	RestoreTimeout time.Duration
	// Credentials, if set, are the execution role's credentials, served
	// by the container credentials endpoint.
	Credentials *Credentials
	// NoFreeze leaves the environment running between invocations.
	NoFreeze bool
	// UncappedBytes of a response go out at full speed (default 6 MB),
	// the rest at BytesPerSecond (default 2 MB/s).
	UncappedBytes, BytesPerSecond int64
	// MaxResponseBytes cuts longer responses (default 20 MiB).
	MaxResponseBytes int64
	// Output also receives the function's stdout and stderr, and the
	// lines this runtime logs (INIT_REPORT, REPORT), as Lambda sends them
	// to CloudWatch Logs.
	Output io.Writer
}

// Credentials are AWS credentials, as the container credentials endpoint
// hands them out.
type Credentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
}

// Report is what Lambda logs at the end of a phase.
type Report struct {
	Phase     string // "init" (the init phase), "invoke" (an init retried within an invocation, or an invocation), "restore" (SnapStart)
	Init      bool   // an init (INIT_REPORT) rather than an invocation (REPORT)
	RequestID string
	Status    string // "success", "error" or "timeout"
	ErrorType string // e.g. Runtime.ExitError, or the function's errorType
	Duration  time.Duration
	// For invocations: the response's mode header (Lambda-Runtime-Function-
	// Response-Mode, "" when the runtime sent none), body bytes and chunks.
	ResponseMode string
	Bytes        int64
	Chunks       int
}

// Function is a running stand-in; Close ends it.
type Function struct {
	opts      Options
	bootstrap string
	api, url  net.Listener
	apiSrv    *http.Server
	urlSrv    *http.Server
	out       *output

	busy chan struct{} // holds a token while a request is served

	mu       sync.Mutex
	env      *environment
	invokes  map[string]*invocation
	reports  []Report
	seq      int // processes started
	requests int
	closed   bool

	credToken string // AWS_CONTAINER_AUTHORIZATION_TOKEN
	credCalls int
}

// environment is one process of the function.
type environment struct {
	cmd      *exec.Cmd
	exited   chan struct{} // closed once the process has ended
	exitErr  error
	initDone chan struct{} // closed on the first /next
	initOnce sync.Once
	initErr  chan lambdaError // POST /runtime/init/error
	events   chan *invocation // handed out by /next

	// SnapStart: snapshot is closed at restore/next (or a first /next),
	// restore to let restore/next return; restoreErr takes POST
	// /runtime/restore/error.
	snapshot     chan struct{}
	snapshotOnce sync.Once
	restore      chan struct{}
	restoreOnce  sync.Once
	restored     bool // restore was closed; f.mu
	restoreErr   chan lambdaError
	snapshotOut  int // bytes of output at the snapshot

	outR   *os.File     // the process's stdout and stderr
	copied atomic.Int64 // bytes of it copied to the output

	mu     sync.Mutex
	frozen bool
}

// invocation is one request in flight.
type invocation struct {
	id       string
	event    []byte
	deadline time.Time
	response chan *http.Request // the runtime's POST .../response
	posted   chan error         // the response handler's answer to the runtime
	errc     chan lambdaError   // the runtime's POST .../error
}

type lambdaError struct {
	Message string `json:"errorMessage"`
	Type    string `json:"errorType"`
}

// Start runs bootstrap (an executable) as a Lambda function and serves its
// Function URL; with Provisioned, its init starts at once.
func Start(bootstrap string, optFns ...func(*Options)) (*Function, error) {
	o := Options{MemoryMB: 2048, Timeout: time.Minute, InitTimeout: 10 * time.Second,
		UncappedBytes: 6_000_000, BytesPerSecond: 2_000_000, MaxResponseBytes: 20 << 20}
	for _, fn := range optFns {
		fn(&o)
	}
	if o.Provisioned || o.SnapStart {
		// snapstart-runtime-hooks-python: 130 s or the function's
		// timeout (at most 900 s), whichever is higher.
		o.InitTimeout = max(o.Timeout, 130*time.Second)
	}
	if o.RestoreTimeout == 0 {
		o.RestoreTimeout = 10 * time.Second
	}
	abs, err := filepath.Abs(bootstrap)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("lambdart: bootstrap %s is not an executable file (%v)", bootstrap, err)
	}
	f := &Function{opts: o, bootstrap: abs, out: &output{w: o.Output}, busy: make(chan struct{}, 1),
		invokes: map[string]*invocation{}}
	if f.api, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if f.url, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		f.api.Close()
		return nil, err
	}
	if o.Credentials != nil {
		b := make([]byte, 16)
		rand.Read(b)
		f.credToken = hex.EncodeToString(b)
	}
	f.apiSrv = &http.Server{Handler: f.runtimeAPI()}
	f.urlSrv = &http.Server{Handler: http.HandlerFunc(f.serveURL)}
	go f.apiSrv.Serve(f.api)
	go f.urlSrv.Serve(f.url)
	if o.Provisioned || o.SnapStart {
		f.mu.Lock()
		f.env, err = f.startEnvironment()
		env := f.env
		f.mu.Unlock()
		if err != nil {
			f.Close()
			return nil, err
		}
		initEnd := env.initDone
		if o.SnapStart {
			initEnd = env.snapshot
		}
		go f.waitPhase(env, "init", initEnd, env.initErr, time.Now().Add(o.InitTimeout))
	}
	return f, nil
}

// URL is the Function URL's base, http://127.0.0.1:PORT/.
func (f *Function) URL() string { return "http://" + f.url.Addr().String() + "/" }

// Reports returns the phases ended so far, oldest first.
func (f *Function) Reports() []Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Report(nil), f.reports...)
}

// Output returns everything the function and the runtime logged.
func (f *Function) Output() string { return f.out.String() }

// Starts counts the processes started so far (cold starts and retried inits).
func (f *Function) Starts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seq
}

// Close kills the function and stops serving.
func (f *Function) Close() error {
	f.mu.Lock()
	f.closed = true
	env := f.env
	f.mu.Unlock()
	if env != nil {
		env.kill()
	}
	f.urlSrv.Close()
	f.apiSrv.Close()
	return nil
}

func (f *Function) report(r Report) {
	f.mu.Lock()
	f.reports = append(f.reports, r)
	f.mu.Unlock()
	ms := float64(r.Duration.Microseconds()) / 1000
	if r.Init {
		line := fmt.Sprintf("INIT_REPORT Init Duration: %.2f ms\tPhase: %s\tStatus: %s", ms, r.Phase, r.Status)
		if r.Phase == "restore" {
			line = fmt.Sprintf("RESTORE_REPORT Restore Duration: %.2f ms\tStatus: %s", ms, r.Status)
		}
		if r.ErrorType != "" {
			line += "\tError Type: " + r.ErrorType
		}
		f.out.log(line)
		return
	}
	line := fmt.Sprintf("REPORT RequestId: %s\tDuration: %.2f ms\tMemory Size: %d MB", r.RequestID, ms, f.opts.MemoryMB)
	if r.Status != "success" {
		line += "\tStatus: " + r.Status
		if r.ErrorType != "" {
			line += "\tError Type: " + r.ErrorType
		}
	}
	f.out.log(line)
}

// startEnvironment starts a process of the function; f.mu is held.
func (f *Function) startEnvironment() (*environment, error) {
	if f.closed {
		return nil, errors.New("lambdart: closed")
	}
	f.seq++
	dir := filepath.Dir(f.bootstrap)
	initType := "on-demand"
	if f.opts.Provisioned {
		initType = "provisioned-concurrency"
	}
	if f.opts.SnapStart {
		initType = "snap-start"
	}
	env := map[string]string{
		"AWS_LAMBDA_RUNTIME_API":          f.api.Addr().String(),
		"AWS_LAMBDA_FUNCTION_NAME":        "function",
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": strconv.Itoa(f.opts.MemoryMB),
		"AWS_LAMBDA_INITIALIZATION_TYPE":  initType,
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/aws/lambda/function",
		"AWS_LAMBDA_LOG_STREAM_NAME":      fmt.Sprintf("2026/12/01/[$LATEST]%032d", f.seq),
		"AWS_REGION":                      "us-east-1",
		"AWS_DEFAULT_REGION":              "us-east-1",
		"LAMBDA_TASK_ROOT":                dir,
		"LAMBDA_RUNTIME_DIR":              "/var/runtime",
		"_HANDLER":                        filepath.Base(f.bootstrap),
		"TZ":                              ":UTC",
		"LANG":                            "en_US.UTF-8",
		"PATH":                            "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
		"LD_LIBRARY_PATH":                 "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:" + dir + ":" + dir + "/lib:/opt/lib",
	}
	if f.opts.Credentials != nil {
		env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = "http://" + f.api.Addr().String() + credentialsPath
		env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = f.credToken
	}
	for k, v := range f.opts.Env {
		env[k] = v
	}
	cmd := exec.Command(f.bootstrap)
	cmd.Dir = dir
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// A pipe of its own, so that the snapshot can tell when what the
	// process wrote before it has all been read (drainOutput).
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outW, outW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // freeze and kill the whole group
	e := &environment{cmd: cmd, exited: make(chan struct{}), initDone: make(chan struct{}),
		initErr: make(chan lambdaError, 1), events: make(chan *invocation),
		snapshot: make(chan struct{}), restore: make(chan struct{}), restoreErr: make(chan lambdaError, 1), outR: outR}
	err = cmd.Start()
	outW.Close()
	if err != nil {
		outR.Close()
		return nil, fmt.Errorf("lambdart: starting %s: %w", f.bootstrap, err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 32<<10)
		for {
			n, err := outR.Read(buf)
			f.out.Write(buf[:n])
			e.copied.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	go func() {
		e.exitErr = cmd.Wait()
		<-copied // the process group is gone: the pipe is at its end
		outR.Close()
		close(e.exited)
	}()
	return e, nil
}

// drainOutput waits, up to a second, until what the process has written
// so far (it is frozen) has been copied to the output: the pipe is empty
// and no copy is under way.
func (e *environment) drainOutput() {
	rc, err := e.outR.SyscallConn()
	if err != nil {
		return
	}
	pending := func() int { // FIONREAD, TIOCINQ on Linux: bytes in the pipe
		n := -1
		rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
		return n
	}
	stable := 0
	for deadline := time.Now().Add(time.Second); stable < 2 && time.Now().Before(deadline); {
		before := e.copied.Load()
		time.Sleep(10 * time.Millisecond)
		if pending() == 0 && e.copied.Load() == before {
			stable++
		} else {
			stable = 0
		}
	}
}

// waitInit waits for env's init phase to end by deadline, reports it and
// says whether it succeeded; a failed environment is killed.
func (f *Function) waitInit(env *environment, phase string, deadline time.Time) bool {
	return f.waitPhase(env, phase, env.initDone, env.initErr, deadline)
}

// waitPhase waits for done (the end of an init or a restore) by deadline,
// reports the phase and says whether it succeeded; a failed environment
// is killed.
func (f *Function) waitPhase(env *environment, phase string, done <-chan struct{}, failed <-chan lambdaError, deadline time.Time) bool {
	start := time.Now()
	r := Report{Phase: phase, Init: true, Status: "success"}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-done:
	case e := <-failed:
		r.Status, r.ErrorType = "error", e.Type
	case <-env.exited:
		r.Status, r.ErrorType = "error", "Runtime.ExitError"
	case <-timer.C:
		r.Status = "timeout"
	}
	r.Duration = time.Since(start)
	f.report(r)
	if r.Status != "success" {
		env.kill()
		return false
	}
	return true
}

// environmentFor returns a ready environment for a request, starting one
// (and retrying a failed init within the invocation) as Lambda does.
func (f *Function) environmentFor(arrived time.Time) (*environment, time.Time, error) {
	if f.opts.SnapStart {
		return f.restoreFor(arrived)
	}
	f.mu.Lock()
	env := f.env
	fresh := false
	if env == nil || env.dead() {
		var err error
		if env, err = f.startEnvironment(); err != nil {
			f.mu.Unlock()
			return nil, time.Time{}, err
		}
		f.env, fresh = env, true
	}
	f.mu.Unlock()
	deadline := arrived.Add(f.opts.Timeout)
	if fresh {
		if f.waitInit(env, "init", arrived.Add(f.opts.InitTimeout)) {
			return env, time.Now().Add(f.opts.Timeout), nil
		}
	} else {
		select {
		case <-env.initDone: // a provisioned init, or one still running
			return env, deadline, nil
		case <-env.exited:
		}
	}
	// The init failed or timed out: Lambda runs it again within the
	// invocation, which then has the function's timeout for both.
	invokeStart := time.Now()
	f.mu.Lock()
	env, err := f.startEnvironment()
	if err == nil {
		f.env = env
	}
	f.mu.Unlock()
	if err != nil {
		return nil, time.Time{}, err
	}
	deadline = invokeStart.Add(f.opts.Timeout)
	if !f.waitInit(env, "invoke", deadline) {
		return nil, time.Time{}, errors.New("init failed twice")
	}
	return env, deadline, nil
}

// restoreFor returns env, a SnapStart environment, restored: it waits for
// the snapshot, then lets restore/next return and waits for the restore
// phase to end. The snapshot, here, is the one process: once it has
// failed or ended, there is nothing to restore.
func (f *Function) restoreFor(arrived time.Time) (*environment, time.Time, error) {
	env := f.current()
	if env == nil || env.dead() {
		// Lambda would restore another copy of the snapshot, which this
		// stand-in does not have.
		return nil, time.Time{}, errors.New("the SnapStart environment has ended and cannot be restored again here")
	}
	select {
	case <-env.snapshot:
	case <-env.exited:
		return nil, time.Time{}, errors.New("the SnapStart init failed")
	}
	f.mu.Lock()
	first := !env.restored
	env.restored = true
	f.mu.Unlock()
	if first {
		env.thaw()
		env.restoreOnce.Do(func() { close(env.restore) })
		if !f.waitPhase(env, "restore", env.initDone, env.restoreErr, time.Now().Add(f.opts.RestoreTimeout)) {
			return nil, time.Time{}, errors.New("the restore failed")
		}
		return env, time.Now().Add(f.opts.Timeout), nil
	}
	select {
	case <-env.initDone:
		return env, arrived.Add(f.opts.Timeout), nil
	case <-env.exited:
		return nil, time.Time{}, errors.New("the environment ended")
	}
}

// Snapshot waits up to timeout for a SnapStart function's snapshot to be
// taken (its runtime has called restore/next and is frozen there) and
// returns what the function had logged by then.
func (f *Function) Snapshot(timeout time.Duration) (string, error) {
	env := f.current()
	if env == nil || !f.opts.SnapStart {
		return "", errors.New("lambdart: not a SnapStart function")
	}
	select {
	case <-env.snapshot:
	case <-env.exited:
		return "", fmt.Errorf("lambdart: the function ended before its snapshot: %v", env.exitErr)
	case <-time.After(timeout):
		return "", fmt.Errorf("lambdart: no snapshot within %v", timeout)
	}
	f.mu.Lock()
	n := env.snapshotOut
	f.mu.Unlock()
	return f.out.String()[:n], nil
}

// CredentialRequests counts the requests for credentials the container
// credentials endpoint answered.
func (f *Function) CredentialRequests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.credCalls
}

func (e *environment) dead() bool {
	select {
	case <-e.exited:
		return true
	default:
		return false
	}
}

func (e *environment) kill() {
	syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	<-e.exited
}

// freeze stops the process group, as Lambda freezes an environment
// between invocations; thaw resumes it.
func (e *environment) freeze() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.frozen && syscall.Kill(-e.cmd.Process.Pid, syscall.SIGSTOP) == nil {
		e.frozen = true
	}
}

func (e *environment) thaw() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.frozen {
		syscall.Kill(-e.cmd.Process.Pid, syscall.SIGCONT)
		e.frozen = false
	}
}

// Frozen reports whether the function's environment is frozen now.
func (f *Function) Frozen() bool {
	f.mu.Lock()
	env := f.env
	f.mu.Unlock()
	if env == nil {
		return false
	}
	env.mu.Lock()
	defer env.mu.Unlock()
	return env.frozen
}

const apiPrefix = "/2018-06-01/runtime/"

// runtimeAPI serves the Runtime API to the function's process.
func (f *Function) runtimeAPI() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+apiPrefix+"invocation/next", f.next)
	mux.HandleFunc("POST "+apiPrefix+"invocation/{id}/response", f.response)
	mux.HandleFunc("POST "+apiPrefix+"invocation/{id}/error", f.invokeError)
	mux.HandleFunc("POST "+apiPrefix+"init/error", f.initError)
	mux.HandleFunc("GET "+apiPrefix+"restore/next", f.restoreNext)
	mux.HandleFunc("POST "+apiPrefix+"restore/error", f.restoreError)
	mux.HandleFunc("GET "+credentialsPath, f.credentials)
	return mux
}

// current is the environment the Runtime API talks to.
func (f *Function) current() *environment {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.env
}

func (f *Function) next(w http.ResponseWriter, r *http.Request) {
	env := f.current()
	if env == nil {
		http.Error(w, "no environment", http.StatusInternalServerError)
		return
	}
	if f.opts.SnapStart {
		// A runtime that never calls restore/next is snapshotted at its
		// first /next, as an image labelled
		// com.amazonaws.lambda.feature.snapstart=Allow is.
		f.takeSnapshot(env)
		select {
		case <-env.restore:
		case <-r.Context().Done():
			return
		}
	}
	env.initOnce.Do(func() { close(env.initDone) })
	var inv *invocation
	select {
	case inv = <-env.events:
	default:
		if !f.opts.NoFreeze {
			env.freeze()
		}
		select {
		case inv = <-env.events:
		case <-r.Context().Done():
			return
		case <-env.exited:
			return
		}
	}
	env.thaw()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(inv.deadline.UnixMilli(), 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:function")
	h.Set("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0")
	w.Write(inv.event)
}

func (f *Function) invocation(r *http.Request) *invocation {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.invokes[r.PathValue("id")]
}

// response takes the function's response: the Function URL side copies
// the body out while this handler waits, then reads the trailers.
func (f *Function) response(w http.ResponseWriter, r *http.Request) {
	inv := f.invocation(r)
	if inv == nil {
		runtimeError(w, http.StatusBadRequest, "InvalidRequestID", "no invocation "+r.PathValue("id")+" is in progress")
		return
	}
	select {
	case inv.response <- r:
	default:
		runtimeError(w, http.StatusBadRequest, "InvalidStateTransition", "a response was already posted")
		return
	}
	select {
	case err := <-inv.posted:
		if err != nil {
			runtimeError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", err.Error())
			return
		}
	case <-r.Context().Done(): // the process was killed
		return
	}
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, `{"status":"OK"}`)
}

func (f *Function) invokeError(w http.ResponseWriter, r *http.Request) {
	inv := f.invocation(r)
	if inv == nil {
		runtimeError(w, http.StatusBadRequest, "InvalidRequestID", "no invocation "+r.PathValue("id")+" is in progress")
		return
	}
	e := readError(r)
	select {
	case inv.errc <- e:
	default:
	}
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, `{"status":"OK"}`)
}

// takeSnapshot ends a SnapStart init: the process is frozen until a
// request restores it.
func (f *Function) takeSnapshot(env *environment) {
	env.snapshotOnce.Do(func() {
		env.freeze()
		env.drainOutput()
		f.mu.Lock()
		env.snapshotOut = len(f.out.String())
		f.mu.Unlock()
		close(env.snapshot)
	})
}

// restoreNext is where a SnapStart runtime waits while its snapshot is
// taken; it returns once the environment is restored.
func (f *Function) restoreNext(w http.ResponseWriter, r *http.Request) {
	env := f.current()
	if env == nil || !f.opts.SnapStart {
		runtimeError(w, http.StatusForbidden, "InvalidStateTransition", "restore/next outside a SnapStart init")
		return
	}
	f.takeSnapshot(env)
	select {
	case <-env.restore:
	case <-r.Context().Done():
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (f *Function) restoreError(w http.ResponseWriter, r *http.Request) {
	env := f.current()
	if env == nil || !f.opts.SnapStart {
		runtimeError(w, http.StatusForbidden, "InvalidStateTransition", "restore/error outside a SnapStart restore")
		return
	}
	select {
	case env.restoreErr <- readError(r):
	default:
	}
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, `{"status":"OK"}`)
}

// credentialsPath is the container credentials endpoint's path.
const credentialsPath = "/2021-04-23/credentials"

// credentials serves the execution role's credentials in the container
// credentials provider's shape, to a caller with the authorization token.
func (f *Function) credentials(w http.ResponseWriter, r *http.Request) {
	c := f.opts.Credentials
	if c == nil || r.Header.Get("Authorization") != f.credToken {
		runtimeError(w, http.StatusUnauthorized, "Unauthorized", "want Authorization: the AWS_CONTAINER_AUTHORIZATION_TOKEN")
		return
	}
	f.mu.Lock()
	f.credCalls++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"AccessKeyId": c.AccessKeyID, "SecretAccessKey": c.SecretAccessKey, "Token": c.SessionToken,
		"Expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	})
}

func (f *Function) initError(w http.ResponseWriter, r *http.Request) {
	env := f.current()
	if env == nil {
		http.Error(w, "no environment", http.StatusInternalServerError)
		return
	}
	select {
	case env.initErr <- readError(r):
	default:
	}
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, `{"status":"OK"}`)
}

func readError(r *http.Request) lambdaError {
	var e lambdaError
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	json.Unmarshal(b, &e)
	if t := r.Header.Get("Lambda-Runtime-Function-Error-Type"); t != "" {
		e.Type = t
	}
	if e.Type == "" {
		e.Type = "Unhandled"
	}
	return e
}

func runtimeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(lambdaError{Message: msg, Type: typ})
}

// serveURL is the Function URL: it turns the request into an event,
// invokes the function and streams its response back.
func (f *Function) serveURL(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	// The environment is free again before the report is out, so that a
	// caller who saw the report can invoke again.
	released := false
	release := func() {
		if !released {
			released = true
			<-f.busy
		}
	}
	select {
	case f.busy <- struct{}{}:
		defer release()
	default:
		urlError(w, http.StatusTooManyRequests, "Rate Exceeded.")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 6<<20+1))
	if err != nil {
		return
	}
	if len(body) > 6<<20 {
		urlError(w, http.StatusRequestEntityTooLarge, "Request must be smaller than 6291456 bytes for the InvokeFunction operation")
		return
	}
	f.mu.Lock()
	f.requests++
	id := fmt.Sprintf("%08x-0000-4000-8000-%012x", arrived.UnixNano()&0xffffffff, f.requests)
	f.mu.Unlock()
	event, err := json.Marshal(urlEvent(r, body, id, arrived))
	if err != nil {
		urlError(w, http.StatusInternalServerError, err.Error())
		return
	}

	env, deadline, err := f.environmentFor(arrived)
	if err != nil {
		release()
		f.report(Report{Phase: "invoke", RequestID: id, Status: "error", ErrorType: "Runtime.InitError"})
		urlError(w, http.StatusBadGateway, "Internal Server Error")
		return
	}
	inv := &invocation{id: id, event: event, deadline: deadline, response: make(chan *http.Request, 1),
		posted: make(chan error, 1), errc: make(chan lambdaError, 1)}
	f.mu.Lock()
	f.invokes[id] = inv
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.invokes, id)
		f.mu.Unlock()
	}()
	start := time.Now()
	rep := Report{Phase: "invoke", RequestID: id, Status: "success"}
	defer func() {
		rep.Duration = time.Since(start)
		release()
		f.report(rep)
	}()
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	fail := func(status, typ string) {
		rep.Status, rep.ErrorType = status, typ
		urlError(w, http.StatusBadGateway, "Internal Server Error")
	}

	select {
	case env.events <- inv:
	case <-env.exited:
		fail("error", "Runtime.ExitError")
		return
	case <-timeout.C:
		env.kill()
		fail("timeout", "")
		return
	}
	var resp *http.Request
	select {
	case resp = <-inv.response:
	case e := <-inv.errc:
		fail("error", e.Type)
		return
	case <-env.exited:
		fail("error", "Runtime.ExitError")
		return
	case <-timeout.C:
		env.kill()
		fail("timeout", "")
		return
	}
	rep.ResponseMode = resp.Header.Get("Lambda-Runtime-Function-Response-Mode")

	// The copy ends when the body does; a timeout kills the process,
	// which ends the body.
	stop := make(chan struct{})
	killed := make(chan bool, 1)
	go func() {
		select {
		case <-timeout.C:
			env.kill()
			killed <- true
		case <-stop:
			killed <- false
		}
	}()
	err = f.stream(w, resp, &rep)
	close(stop)
	if <-killed {
		rep.Status, rep.ErrorType, err = "timeout", "", errors.New("timed out")
	}
	inv.posted <- err
	if err != nil || rep.Status != "success" {
		if rep.Status == "success" {
			rep.Status = "error"
		}
		// A Function URL cannot change a status already sent: the
		// stream just breaks off.
		panic(http.ErrAbortHandler)
	}
}

// stream copies the runtime's response to the client as it arrives.
func (f *Function) stream(w http.ResponseWriter, resp *http.Request, rep *Report) error {
	body := resp.Body
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	buf := make([]byte, 64<<10)
	var pending []byte // body bytes read with the prelude
	if ct == "application/vnd.awslambda.http-integration-response" {
		var prelude []byte
		sep := make([]byte, 8)
		for {
			n, err := body.Read(buf)
			prelude = append(prelude, buf[:n]...)
			if i := bytes.Index(prelude, sep); i >= 0 {
				pending = prelude[i+8:]
				prelude = prelude[:i]
				break
			}
			if err != nil || len(prelude) > 1<<20 {
				rep.ErrorType = "Runtime.InvalidResponse"
				return fmt.Errorf("no prelude ending in 8 NUL bytes in %q (%v)", trim(prelude), err)
			}
		}
		var p struct {
			StatusCode int               `json:"statusCode"`
			Headers    map[string]string `json:"headers"`
			Cookies    []string          `json:"cookies"`
		}
		if err := json.Unmarshal(prelude, &p); err != nil {
			rep.ErrorType = "Runtime.InvalidResponse"
			return fmt.Errorf("prelude %q: %w", trim(prelude), err)
		}
		for k, v := range p.Headers {
			w.Header().Set(k, v)
		}
		for _, c := range p.Cookies {
			w.Header().Add("Set-Cookie", c)
		}
		if p.StatusCode == 0 {
			p.StatusCode = http.StatusOK
		}
		w.WriteHeader(p.StatusCode)
	} else {
		if ct != "" {
			w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		}
		w.WriteHeader(http.StatusOK)
	}
	rc := http.NewResponseController(w)
	rc.Flush()

	client := true // false once the client is gone: the function runs on
	var sent int64
	capStart := time.Time{}
	send := func(p []byte) error {
		if len(p) == 0 {
			return nil
		}
		if sent+int64(len(p)) > f.opts.MaxResponseBytes {
			rep.ErrorType = "Function.ResponseSizeTooLarge"
			return fmt.Errorf("response over %d bytes", f.opts.MaxResponseBytes)
		}
		sent += int64(len(p))
		rep.Bytes, rep.Chunks = sent, rep.Chunks+1
		if over := sent - f.opts.UncappedBytes; over > 0 {
			if capStart.IsZero() {
				capStart = time.Now()
			}
			due := capStart.Add(time.Duration(float64(over) / float64(f.opts.BytesPerSecond) * float64(time.Second)))
			time.Sleep(time.Until(due))
		}
		if client {
			if _, err := w.Write(p); err != nil {
				client = false
			} else if rc.Flush() != nil {
				client = false
			}
		}
		return nil
	}
	if err := send(pending); err != nil {
		return err
	}
	for {
		n, err := body.Read(buf)
		if err := send(buf[:n]); err != nil {
			return err
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rep.ErrorType = "Runtime.ExitError"
			f.out.log("reading the response stream: " + err.Error())
			return err
		}
	}
	if t := resp.Trailer.Get("Lambda-Runtime-Function-Error-Type"); t != "" {
		rep.Status, rep.ErrorType = "error", t
		msg, _ := base64.StdEncoding.DecodeString(resp.Trailer.Get("Lambda-Runtime-Function-Error-Body"))
		f.out.log(fmt.Sprintf("the response stream ended with an error: %s %s", t, msg))
	}
	return nil
}

func trim(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

func urlError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"Message": msg})
}

// isText reports whether a Function URL passes a body of this content type
// as text; other bodies arrive base64-encoded.
func isText(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return strings.HasPrefix(mt, "text/") || mt == "application/json" || mt == "application/xml" ||
		mt == "application/javascript" || mt == "application/x-www-form-urlencoded" || strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "+xml")
}

// urlEvent is the Function URL's event (payload format 2.0) for r.
func urlEvent(r *http.Request, body []byte, id string, at time.Time) events.LambdaFunctionURLRequest {
	const domain = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws"
	headers := map[string]string{}
	var cookies []string
	for k, vs := range r.Header {
		k = strings.ToLower(k)
		if k == "cookie" {
			for _, v := range vs {
				for c := range strings.SplitSeq(v, ";") {
					cookies = append(cookies, strings.TrimSpace(c))
				}
			}
			continue
		}
		headers[k] = strings.Join(vs, ",")
	}
	headers["host"] = domain
	headers["x-forwarded-proto"] = "https"
	headers["x-forwarded-port"] = "443"
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	headers["x-forwarded-for"] = host
	var query map[string]string
	if q := r.URL.Query(); len(q) > 0 {
		query = map[string]string{}
		for k, vs := range q {
			query[k] = strings.Join(vs, ",")
		}
	}
	ev := events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: r.URL.EscapedPath(), RawQueryString: r.URL.RawQuery, Cookies: cookies,
		Headers: headers, QueryStringParameters: query,
		RequestContext: events.LambdaFunctionURLRequestContext{
			AccountID: "anonymous", RequestID: id, APIID: domain[:32], DomainName: domain, DomainPrefix: domain[:32],
			Time: at.UTC().Format("02/Jan/2006:15:04:05 -0700"), TimeEpoch: at.UnixMilli(),
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{
				Method: r.Method, Path: r.URL.Path, Protocol: r.Proto, SourceIP: host, UserAgent: r.UserAgent(),
			},
		},
	}
	if len(body) > 0 {
		if isText(r.Header.Get("Content-Type")) {
			ev.Body = string(body)
		} else {
			ev.Body, ev.IsBase64Encoded = base64.StdEncoding.EncodeToString(body), true
		}
	}
	return ev
}

// output collects the function's logs and passes them on.
type output struct {
	w   io.Writer
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	if o.w != nil {
		o.w.Write(p)
	}
	return len(p), nil
}

func (o *output) log(line string) { o.Write([]byte(line + "\n")) }

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
