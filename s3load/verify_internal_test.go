package s3load

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestCRCCheckValues(t *testing.T) {
	// Check values of the CRC catalogue for "123456789".
	in := []byte("123456789")
	if got := crc64NVME.update(0, in); got != 0xae8b14860a799888 {
		t.Errorf("CRC64NVME = %x, want ae8b14860a799888", got)
	}
	if got := crc32C.update(0, in); got != 0xe3069283 {
		t.Errorf("CRC32C = %x, want e3069283", got)
	}
}

func TestCRCCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<16)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for _, spec := range []*crcSpec{crc64NVME, crc32C} {
		whole := spec.update(0, data)
		for range 50 {
			// Split into random pieces, as parts of a download are.
			var crc uint64
			for rest := data; len(rest) > 0; {
				n := 1 + rng.IntN(len(rest))
				crc = spec.combine(crc, spec.update(0, rest[:n]), int64(n))
				rest = rest[n:]
			}
			if crc != whole {
				t.Fatalf("%s: combined %x, whole %x", spec.name, crc, whole)
			}
		}
		if got := spec.combine(whole, 0, 0); got != whole {
			t.Errorf("%s: combining an empty piece changed the CRC", spec.name)
		}
	}
	if crc32C.poly != uint64(crc32.Castagnoli) {
		t.Error("CRC32C polynomial")
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&Error{Op: "GetObject", Err: errStalled}, true},
		{&Error{Op: "GetObject", kind: ErrBadResponse, Err: errStalled}, true},
		{&Error{Op: "GetObject", kind: ErrNotFound, Err: errStalled}, false},
		{&Error{Op: "GetObject", kind: ErrAccessDenied, Err: errStalled}, false},
		{&Error{Op: "GetObject", kind: ErrObjectChanged, Err: errStalled}, false},
		{&Error{Op: "write", Err: errStalled}, false},
		{&Error{Op: "GetObject", kind: ErrRedirect, Err: errStalled}, false},
		{&Error{Op: "read", kind: ErrDestination, Err: errStalled}, false},
		{&Error{Op: "GetObject", kind: ErrStalled, Err: errStalled}, true},
		{&Error{Op: "GetObject", kind: ErrUnavailable, Err: errStalled}, true},
		{errStalled, false},
	}
	for _, tt := range tests {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for _, s := range []string{"", "bytes 0-9", "bytes 9-0/10", "bytes 0-10/10", "items 0-1/2", "bytes a-1/2", "bytes -1-1/2"} {
		if _, _, _, err := parseContentRange(s); err == nil {
			t.Errorf("parseContentRange(%q) accepted", s)
		}
	}
	if a, b, n, err := parseContentRange("bytes 5-9/10"); err != nil || a != 5 || b != 9 || n != 10 {
		t.Errorf("parseContentRange(bytes 5-9/10) = %d %d %d %v", a, b, n, err)
	}
}

func BenchmarkChecksum(b *testing.B) {
	buf := make([]byte, 1<<20)
	for _, spec := range []*crcSpec{crc64NVME, crc32C} {
		b.Run(spec.name, func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				spec.update(0, buf)
			}
		})
	}
}
