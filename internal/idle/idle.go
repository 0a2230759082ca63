// Package idle runs work that can wait behind the rest of the process.
package idle

import (
	"runtime"
	"sync"
)

var (
	mu      sync.Mutex
	queue   []func()
	started bool
	wake    = make(chan struct{}, 1)
)

// Go runs f on an OS thread that yields the CPU to the process's other
// threads (nice 19) where the system allows it: work done in the shadow
// of a download, such as touching memory that is needed later, then
// takes no CPU from the download or from llama.cpp's load while they want
// it. It returns at once; the functions given run one at a time, in the
// order given.
//
// The thread is one for the process, started on the first call, and
// never ends (one goroutine, blocked while there is no work): a thread's
// niceness cannot be lowered back without privilege, so it cannot go back
// to the runtime's other goroutines, and a locked goroutine that exits
// ends its thread, which crashes a process whose threads purego's fakecgo
// made (ebitengine/purego#485).
func Go(f func()) {
	mu.Lock()
	queue = append(queue, f)
	if !started {
		started = true
		go worker()
	}
	mu.Unlock()
	select {
	case wake <- struct{}{}:
	default:
	}
}

// Worker is the name of the function the thread runs, for a goroutine
// leak check to ignore (goleak.IgnoreAnyFunction(idle.Worker)): it runs
// for the process's life by design.
const Worker = "github.com/memload/memload/internal/idle.worker"

func worker() {
	runtime.LockOSThread() // never unlocked: the thread is this goroutine's
	lower()
	for {
		mu.Lock()
		if len(queue) == 0 {
			mu.Unlock()
			<-wake
			continue
		}
		f := queue[0]
		queue = queue[1:]
		mu.Unlock()
		f()
	}
}
