package llm

import (
	"crypto/rand"
	"encoding/binary"
)

// randomSeed returns a sampling seed from crypto/rand, that is from the
// kernel: after a SnapStart restore the kernel's entropy is the new
// environment's own, while math/rand/v2's state is the snapshot's, the
// same in every environment restored from it.
func randomSeed() uint32 {
	var b [4]byte
	rand.Read(b[:]) // never fails on Linux (crypto/rand's doc)
	return binary.LittleEndian.Uint32(b[:])
}
