package llm

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/memload/memload/memfd"
)

// PunchHole gives back the pages of bytes [off, off+n), as
// memfd.File.PunchHole does.
func (p fdPages) PunchHole(off, n int64) error {
	err := unix.Fallocate(int(p.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EPERM) {
		return &os.PathError{Op: "punch hole", Path: p.f.Name(), Err: memfd.ErrSealed}
	}
	return err
}
