package llm

import "testing"

// TestRandomSeed checks that default seeds vary: 16 draws of 32 bits
// repeat by chance with a probability under 3e-8.
func TestRandomSeed(t *testing.T) {
	seen := map[uint32]bool{}
	for range 16 {
		seen[randomSeed()] = true
	}
	if len(seen) != 16 {
		t.Errorf("16 seeds, %d distinct", len(seen))
	}
}
