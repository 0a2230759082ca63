//go:build linux

package memfd

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// maxNameLen is the longest name memfd_create(2) accepts (249 bytes).
const maxNameLen = 249

// New creates an in-memory file of size bytes named name (for /proc
// listings; it need not be unique). Unless Options say otherwise, it first
// checks that size fits in the memory the process may use, then reserves
// all pages with fallocate(2). Reserving fails with a [*MemoryError] where
// the kernel refuses the memory (strict overcommit); under a memory cgroup
// (Lambda) a process that takes more than its limit is killed, reserving or
// writing, which is why the check comes first.
func New(name string, size int64, optFns ...func(*Options)) (*File, error) {
	var o Options
	for _, fn := range optFns {
		fn(&o)
	}
	if size < 0 || o.Headroom < 0 {
		return nil, fmt.Errorf("memfd: size %d or headroom %d for %q is negative", size, o.Headroom, name)
	}
	if name == "" {
		name = "memload"
	}
	if len(name) > maxNameLen {
		name = name[:maxNameLen]
	}
	if !o.NoMemoryCheck {
		if err := checkMemory(name, size, o.Headroom); err != nil {
			return nil, err
		}
	}

	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("%w (%v): run on Linux 3.17+ without a seccomp filter that blocks it", ErrUnsupported, err)
		}
		return nil, fmt.Errorf("memfd: memfd_create %q: %w", name, err)
	}
	f := &File{f: os.NewFile(uintptr(fd), "memfd:"+name), name: name, size: size}
	if err := f.allocate(&o); err != nil {
		f.f.Close()
		return nil, err
	}
	return f, nil
}

func (f *File) allocate(o *Options) error {
	fd := int(f.f.Fd())
	if err := unix.Ftruncate(fd, f.size); err != nil {
		return fmt.Errorf("memfd: ftruncate %s to %d bytes: %w", f.describe(), f.size, err)
	}
	if o.NoReserve {
		return nil
	}
	return f.Reserve(0, f.size)
}

// Seal makes the file immutable: it adds F_SEAL_WRITE, F_SEAL_GROW,
// F_SEAL_SHRINK and F_SEAL_SEAL, so later writes fail with [ErrSealed] and
// nothing can remove the seals. Sealing twice is not an error.
func (f *File) Seal() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sealed {
		return nil
	}
	const seals = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(f.f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("memfd: seal %s: a writable shared mapping of it still exists: unmap it first (%w)", f.describe(), err)
		}
		return fmt.Errorf("memfd: seal %s: %w", f.describe(), err)
	}
	f.sealed = true
	return nil
}

// PunchHole gives the memory of the n bytes at off back to the kernel
// (fallocate PUNCH_HOLE): they read as zeros afterwards, in every mapping
// of the file, and the file keeps its size. Only whole pages are freed:
// partial pages at either end are zeroed. Once the file is sealed the
// kernel forbids it, and PunchHole returns an error matching [ErrSealed]:
// punch first, then seal.
func (f *File) PunchHole(off, n int64) error {
	if off < 0 || n < 0 || off+n > f.size {
		return fmt.Errorf("memfd: punch %d bytes at %d of %s: outside its %d bytes", n, off, f.describe(), f.size)
	}
	if n == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err != nil {
		if errors.Is(err, unix.EPERM) && f.isSealed() {
			return &os.PathError{Op: "punch hole", Path: f.describe(), Err: ErrSealed}
		}
		return fmt.Errorf("memfd: punch %d bytes at %d of %s: %w", n, off, f.describe(), err)
	}
	return nil
}

// Reserve takes the memory of the n bytes at off now (fallocate), so
// that writing them later allocates nothing; [New] reserves the whole
// file unless Options.NoReserve. A range already written or reserved
// costs nothing. It may run while other goroutines write the file, and on
// a sealed file (no byte changes). A reservation the memory cannot hold
// fails with an error matching [ErrInsufficientMemory].
func (f *File) Reserve(off, n int64) error {
	if off < 0 || n < 0 || off+n > f.size {
		return fmt.Errorf("memfd: reserve %d bytes at %d of %s: outside its %d bytes", n, off, f.describe(), f.size)
	}
	if n == 0 {
		return nil
	}
	if err := unix.Fallocate(int(f.f.Fd()), 0, off, n); err != nil {
		switch {
		case errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.ENOSPC):
			merr := memoryError(f.name, n)
			merr.Err = fmt.Errorf("fallocate: %w", err)
			return merr
		}
		return fmt.Errorf("memfd: reserve %d bytes at %d of %s: %w", n, off, f.describe(), err)
	}
	return nil
}

// Map returns a read-only shared mapping of the whole file, for zero-copy
// readers such as hashes and parsers. Every call returns the same mapping;
// it is unmapped by Close, after which touching it faults.
func (f *File) Map() ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mapped != nil || f.size == 0 {
		return f.mapped, nil
	}
	if int64(int(f.size)) != f.size {
		return nil, fmt.Errorf("memfd: map %s: %d bytes do not fit in the address space", f.describe(), f.size)
	}
	// Map a read-only descriptor: a shared mapping of the writable one
	// counts as writable and would make Seal fail with EBUSY.
	ro, err := os.Open(f.Path())
	if err != nil {
		return nil, fmt.Errorf("memfd: map %s: %w", f.describe(), err)
	}
	defer ro.Close()
	b, err := unix.Mmap(int(ro.Fd()), 0, int(f.size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("memfd: map %s: %w", f.describe(), err)
	}
	f.mapped = b
	return b, nil
}

// Close unmaps the file and closes its descriptor. The memory is freed once
// no other mapping or descriptor of the file remains (llama.cpp may keep a
// mapping of its own).
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	if f.mapped != nil {
		if err := unix.Munmap(f.mapped); err != nil {
			errs = append(errs, fmt.Errorf("memfd: unmap %s: %w", f.describe(), err))
		}
		f.mapped = nil
	}
	if err := f.f.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
