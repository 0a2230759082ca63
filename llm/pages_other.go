//go:build !linux

package llm

import "github.com/memload/memload/memfd"

// PunchHole returns memfd.ErrUnsupported: memfds are Linux's.
func (p fdPages) PunchHole(off, n int64) error { return memfd.ErrUnsupported }
