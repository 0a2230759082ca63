package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memload/memload/internal/testutil/lambdart"
)

// arrivals records when each part of a response body came in.
type arrivals struct {
	r     io.Reader
	start time.Time
	mu    sync.Mutex
	at    []time.Duration // since start, one per Read that returned data
	end   []int           // the body's length after that Read
	n     int
}

func (a *arrivals) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.mu.Lock()
		a.n += n
		a.at, a.end = append(a.at, time.Since(a.start)), append(a.end, a.n)
		a.mu.Unlock()
	}
	return n, err
}

// when returns the index of the Read that completed byte offset off, and
// its time.
func (a *arrivals) when(off int) (int, time.Duration) {
	for i, e := range a.end {
		if e >= off {
			return i, a.at[i]
		}
	}
	return len(a.at), -1
}

// streamedAnswer asks for a greedy streamed answer at base and returns its
// text, the final chunk, and for each content event the Read it arrived in
// and when.
func streamedAnswer(t *testing.T, base string, tokens int) (text string, last chatResponse, reads []int, times []time.Duration) {
	t.Helper()
	body := `{"stream":true,"messages":[{"role":"user","content":"Tell me a long story"}],"temperature":0,"max_tokens":` + itoa(tokens) + `}`
	start := time.Now()
	resp := post(t, context.Background(), base, body)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %v: %s", resp.Status, resp.Header, b)
	}
	a := &arrivals{r: resp.Body, start: start}
	raw, err := io.ReadAll(a)
	if err != nil {
		t.Fatal(err)
	}
	events := readSSE(t, bytes.NewReader(raw))
	text, last, _ = streamed(t, events)
	// Find each content event's end in the body, in order.
	off := 0
	for _, ev := range strings.SplitAfter(string(raw), "\n\n") {
		off += len(ev)
		if strings.Contains(ev, `"content":"`) && !strings.Contains(ev, `"content":""`) {
			i, at := a.when(off)
			reads, times = append(reads, i), append(times, at)
		}
	}
	return text, last, reads, times
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestLambdaStreaming runs the zip's bootstrap under lambdart, a stand-in
// for Lambda's Runtime API and a Function URL in RESPONSE_STREAM mode
// (Lambda's own emulator does not stream), loading the model from MinIO.
// The answer must reach the HTTP client token by token, as it is
// generated, and be the same greedy answer the local server gives.
func TestLambdaStreaming(t *testing.T) {
	bin := bootstrap(t)
	env := minioModel(t)
	env["MAX_TOKENS"] = "400"
	f := startFunction(t, bin, func(o *lambdart.Options) {
		o.Env, o.MemoryMB, o.Timeout = env, 2048, 2*time.Minute
	})

	// The cold start: on demand, the first request starts the function;
	// the model loads within the init phase.
	h := health(t, f)
	if h.Status != "ready" || h.ColdStart == nil || !h.ColdStart.LoadedInit {
		t.Fatalf("healthz %+v", h)
	}
	// The invocation's report follows the runtime's end of the response.
	for deadline := time.Now().Add(10 * time.Second); len(f.Reports()) < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if r := f.Reports(); len(r) < 2 || !r[0].Init || r[0].Phase != "init" || r[0].Status != "success" || r[0].Duration > 10*time.Second {
		t.Fatalf("reports %+v: want an init within Lambda's 10 s", r)
	}

	const tokens = 400
	text, last, reads, times := streamedAnswer(t, f.URL(), tokens)
	// Greedy, the answer may still end its turn before max_tokens; it
	// must be long enough to show the stream.
	if last.Timings == nil || last.Timings.PredictedN < 100 {
		t.Fatalf("final chunk %+v: want at least 100 of %d tokens", last, tokens)
	}
	distinct := map[int]bool{}
	for _, r := range reads {
		distinct[r] = true
	}
	first, final := times[0], times[len(times)-1]
	t.Logf("%d content events in %d reads; first at %v, last at %v", len(reads), len(distinct), first, final)
	if len(distinct) < 20 {
		t.Errorf("the answer came in %d reads: want it streamed, token by token", len(distinct))
	}
	if first > final/2 {
		t.Errorf("first content at %v, last at %v: the first should arrive long before the end", first, final)
	}
	for deadline := time.Now().Add(10 * time.Second); len(f.Reports()) < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	rep := f.Reports()[len(f.Reports())-1]
	if rep.Status != "success" || rep.Chunks < 20 {
		t.Errorf("the runtime's response: %+v", rep)
	}
	t.Logf("response mode header %q, %d chunks, %d bytes from the runtime", rep.ResponseMode, rep.Chunks, rep.Bytes)

	// The same bootstrap, as a local server: the same answer.
	p := start(t, env, bin, "-addr", "127.0.0.1:0")
	base := waitServing(t, p)
	local, localLast, _, _ := streamedAnswer(t, base, tokens)
	if local != text || *localLast.Choices[0].FinishReason != *last.Choices[0].FinishReason || localLast.Timings.PredictedN != last.Timings.PredictedN {
		t.Errorf("under lambdart %q (%s)\nlocally       %q (%s)", text, *last.Choices[0].FinishReason, local, *localLast.Choices[0].FinishReason)
	}
}

// startFunction runs bootstrap under lambdart, which stands in for
// Lambda's runtime (the emulator does not stream); the function's output
// is logged if the test fails.
func startFunction(t *testing.T, bootstrap string, optFns ...func(*lambdart.Options)) *lambdart.Function {
	t.Helper()
	f, err := lambdart.Start(bootstrap, optFns...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			t.Logf("function output:\n%s", f.Output())
		}
	})
	return f
}

// health asks the function's /healthz, which starts it if need be.
func health(t *testing.T, f *lambdart.Function) healthAnswer {
	t.Helper()
	resp, err := http.Get(f.URL() + "healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := decode[healthAnswer](t, resp.Body)
	io.Copy(io.Discard, resp.Body)
	return h
}
