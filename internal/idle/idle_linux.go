package idle

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// lower locks the calling goroutine to its thread and gives the thread
// the lowest priority. The goroutine must not unlock it: the thread is
// then not reused for other goroutines but ends with this one.
func lower() {
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19) // raising niceness needs no privilege; failing, f runs at normal priority
}
