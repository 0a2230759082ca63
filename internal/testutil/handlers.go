package testutil

import (
	"net/http"
	"sync"
	"time"
)

// handlerGroup counts the handlers a test server is running, so that its
// Close can wait for them. A bare sync.WaitGroup cannot do this: net/http
// may start a handler (Add) while Close is already in Wait, which the
// WaitGroup forbids and the race detector reports. Here a handler that
// starts after Close began is refused instead.
type handlerGroup struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// enter reports whether a handler may run; if so it must call leave.
func (g *handlerGroup) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

func (g *handlerGroup) leave() { g.wg.Done() }

// close refuses new handlers and waits for the running ones. It reports
// false if the group was already closed.
func (g *handlerGroup) close(stop func()) bool {
	g.mu.Lock()
	first := !g.closed
	g.closed = true
	g.mu.Unlock()
	if first {
		stop()
	}
	g.wg.Wait()
	return first
}

// waitFor waits d for a test server's handler, and reports false if the
// client (r's context) or the server (stop) went away meanwhile.
func waitFor(r *http.Request, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-stop:
	}
	return false
}
