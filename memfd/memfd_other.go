//go:build !linux

package memfd

import "fmt"

// New returns an error matching [ErrUnsupported]: memory files need Linux.
func New(name string, size int64, optFns ...func(*Options)) (*File, error) {
	return nil, fmt.Errorf("%w: memfd_create needs Linux", ErrUnsupported)
}

// Seal returns [ErrUnsupported].
func (f *File) Seal() error { return ErrUnsupported }

// PunchHole returns [ErrUnsupported].
func (f *File) PunchHole(off, n int64) error { return ErrUnsupported }

// Reserve returns [ErrUnsupported].
func (f *File) Reserve(off, n int64) error { return ErrUnsupported }

// Map returns [ErrUnsupported].
func (f *File) Map() ([]byte, error) { return nil, ErrUnsupported }

// Close closes the descriptor.
func (f *File) Close() error { return f.f.Close() }
