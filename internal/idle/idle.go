// Package idle runs work that can wait behind the rest of the process.
package idle

// Go runs f on a goroutine of its own, on an OS thread that yields the
// CPU to the process's other threads (nice 19) where the system allows
// it: work done in the shadow of a download, such as touching memory
// that is needed later, then takes no CPU from the download or from
// llama.cpp's load while they want it. The thread ends with f.
func Go(f func()) {
	go func() {
		lower() // the goroutine stays on the lowered thread, which exits with it
		f()
	}()
}
