// Package memfd holds data in an anonymous in-memory file created with
// memfd_create(2), so that a library which only opens paths (llama.cpp, for
// one) can read bytes that never touched a disk, through /proc/self/fd/N.
//
// A process that fills a memfd past its memory cgroup's limit is killed by
// the kernel, not told: writes, fallocate and page faults alike. So [New]
// refuses up front, with an [ErrInsufficientMemory] error that carries the
// numbers, when the size does not fit in what the process's cgroup and the
// machine allow. It then sizes the File and reserves its memory, so the
// memory is taken before the File is filled.
//
// memfd_create is Linux-only. On other systems, and where a seccomp filter
// forbids the call, [New] returns an error matching [ErrUnsupported].
package memfd

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// ErrUnsupported is returned by [New] when the system cannot create memory
// files: not Linux, or memfd_create is blocked (ENOSYS, EPERM).
var ErrUnsupported = errors.New("memfd: memfd_create is not supported here")

// ErrInsufficientMemory is matched (with errors.Is) by the [*MemoryError]
// that [New] returns when the requested size does not fit in memory.
var ErrInsufficientMemory = errors.New("memfd: insufficient memory")

// ErrSealed is matched by the error of a write to a sealed File.
var ErrSealed = errors.New("memfd: file is sealed")

// Options configure [New].
type Options struct {
	// NoReserve skips reserving the file's pages with fallocate(2), which
	// takes about 0.25 s per GiB in New. The file is then sparse: memory
	// is taken as it is written, at a higher CPU cost when many goroutines
	// write at once (BENCHMARKS.md). The up-front memory check still runs.
	NoReserve bool

	// NoMemoryCheck skips comparing the size with the memory the process
	// may use (cgroup limit, MemAvailable) before creating the file.
	NoMemoryCheck bool

	// Headroom is memory the process will need besides the file once it is
	// filled, such as the buffers of the library that reads it (llama.cpp's
	// KV cache and compute buffers). The check then requires size plus
	// Headroom to fit, so that a load which would be killed later is
	// refused before it starts. Nothing is reserved for it.
	Headroom int64
}

// File is an anonymous in-memory file of fixed size. It is safe for
// concurrent use: WriteAt and ReadAt may be called from many goroutines.
type File struct {
	f    *os.File
	name string
	size int64

	writing sync.Mutex // held by WriteAt: see there

	mu     sync.Mutex
	mapped []byte
	sealed bool
}

// Path returns /proc/self/fd/N, a path by which this process can open the
// file. It is valid until Close, and only inside this process: the
// descriptor is close-on-exec.
func (f *File) Path() string { return fmt.Sprintf("/proc/self/fd/%d", f.f.Fd()) }

// Fd returns the file descriptor.
func (f *File) Fd() uintptr { return f.f.Fd() }

// Name returns the name given to [New]; the kernel shows it as
// "memfd:NAME" in /proc/self/fd.
func (f *File) Name() string { return f.name }

// Size returns the file's size in bytes, fixed at creation.
func (f *File) Size() int64 { return f.size }

// ReadAt implements [io.ReaderAt].
func (f *File) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }

// WriteAt implements [io.WriterAt] with pwrite(2). Writes past Size fail:
// the file does not grow.
//
// Concurrent calls take turns. The kernel runs one write to a memfd at a
// time anyway (under the inode lock), and a writer waiting for that lock
// spins on a CPU; waiting here parks the goroutine instead. Eight
// goroutines writing 1 MiB at a time use about a quarter less CPU this
// way, at the same speed (BenchmarkWriteAt).
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > f.size {
		return 0, &os.PathError{Op: "write", Path: f.describe(),
			Err: fmt.Errorf("range [%d, %d) is outside the file's %d bytes", off, off+int64(len(p)), f.size)}
	}
	f.writing.Lock()
	n, err := f.f.WriteAt(p, off)
	f.writing.Unlock()
	if err != nil && f.isSealed() {
		err = &os.PathError{Op: "write", Path: f.describe(), Err: ErrSealed}
	}
	return n, err
}

func (f *File) isSealed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sealed
}

func (f *File) describe() string { return "memfd:" + f.name }

// MemoryError reports that a File of Requested bytes does not fit in the
// memory the process may use. It matches [ErrInsufficientMemory].
type MemoryError struct {
	Name      string // the File's name
	Requested int64  // bytes asked for
	Headroom  int64  // of Requested, the bytes needed besides the file (Options.Headroom)
	Available int64  // bytes the process may still take, -1 if unknown
	Limit     int64  // the cgroup's memory limit, 0 if there is none
	Err       error  // the failed reservation, if it got that far
}

func (e *MemoryError) Error() string {
	msg := fmt.Sprintf("memfd: %q needs %s of memory", e.Name, formatBytes(e.Requested))
	if e.Headroom > 0 {
		msg += fmt.Sprintf(" (%s for the file, %s besides)", formatBytes(e.Requested-e.Headroom), formatBytes(e.Headroom))
	}
	if e.Available >= 0 {
		msg += fmt.Sprintf(" but only %s is available", formatBytes(e.Available))
	}
	if e.Limit > 0 {
		msg += fmt.Sprintf(" (cgroup limit %s)", formatBytes(e.Limit))
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg + ": give the process more memory (on Lambda, raise MemorySize) or load a smaller object"
}

// Is reports whether target is [ErrInsufficientMemory].
func (e *MemoryError) Is(target error) bool { return target == ErrInsufficientMemory }

// Unwrap returns the cause, if any.
func (e *MemoryError) Unwrap() error { return e.Err }

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB (%d bytes)", float64(n)/float64(div), "KMGTP"[exp], n)
}
