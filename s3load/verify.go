package s3load

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/minio/crc64nvme"
)

// headResult is HeadObject's answer about the object's checksum.
type headResult struct {
	out *s3.HeadObjectOutput
	err error
}

func (d *download) head(ctx context.Context) headResult {
	ctx, cancel := context.WithTimeout(ctx, d.opts.StallTimeout)
	defer cancel()
	out, err := d.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: &d.obj.Bucket, Key: &d.obj.Key, ChecksumMode: types.ChecksumModeEnabled,
	}, d.clientOptions()...)
	return headResult{out, err}
}

// useChecksum picks the full-object checksum to verify from HeadObject's
// answer, once the first GET has pinned the object's version.
func (d *download) useChecksum(h headResult) error {
	if d.opts.NoChecksum {
		return nil
	}
	if h.err != nil {
		d.log.Warn("s3load: HeadObject failed, so the S3 checksum is not verified", "err", h.err)
		return nil
	}
	if d.versionID != "" && aws.ToString(h.out.VersionId) != d.versionID {
		d.log.Info("s3load: a newer version exists; the pinned version's checksum is not verified")
		return nil
	}
	if etag := aws.ToString(h.out.ETag); etag != d.etag {
		return &Error{Object: d.obj, Op: "HeadObject", End: -1, Attempt: 1, kind: ErrObjectChanged,
			Err: fmt.Errorf("ETag %s differs from %s of the first GET", etag, d.etag)}
	}
	if h.out.ChecksumType == types.ChecksumTypeComposite {
		return nil // a checksum of part checksums: needs the upload's part sizes
	}
	spec, value := crc64NVME, aws.ToString(h.out.ChecksumCRC64NVME)
	if value == "" {
		spec, value = crc32C, aws.ToString(h.out.ChecksumCRC32C)
	}
	if value == "" || strings.Contains(value, "-") {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(value)
	if err != nil || len(raw) != spec.width/8 {
		d.log.Warn("s3load: ignoring a malformed checksum", "algorithm", spec.name, "value", value)
		return nil
	}
	var want uint64
	for _, b := range raw {
		want = want<<8 | uint64(b)
	}
	d.crc, d.crcWant = spec, want
	d.sums = make([]partSum, (d.size+d.opts.PartSize-1)/d.opts.PartSize)
	return nil
}

// verify checks the bytes in place against the S3 checksum and the
// expected SHA-256, as configured, and says what it checked.
func (d *download) verify(ctx context.Context) (string, error) {
	var checked []string
	fail := func(format string, args ...any) error {
		return &Error{Object: d.obj, Op: "verify", End: -1, Attempt: 1, kind: ErrChecksum,
			Err: fmt.Errorf(format, args...), hint: "the bytes were corrupted on the way or the checksum is wrong: load again"}
	}
	if d.crc != nil {
		var crc uint64
		var n int64
		for _, s := range d.sums {
			crc = d.crc.combine(crc, s.crc, s.n)
			n += s.n
		}
		if n != d.size || crc != d.crcWant {
			return "", fail("%s of the %d bytes loaded is %x, S3 says %x", d.crc.name, n, crc, d.crcWant)
		}
		checked = append(checked, d.crc.name)
	}
	if d.opts.SHA256 != "" {
		sum := hex.EncodeToString(sha256.New().Sum(nil)) // an empty object's
		if d.sha256 != nil {
			r := <-d.sha256
			if r.err != nil {
				return "", r.err
			}
			sum = r.sum
		}
		if !strings.EqualFold(sum, d.opts.SHA256) {
			return "", fail("SHA-256 of the bytes loaded is %s, expected %s", sum, d.opts.SHA256)
		}
		checked = append(checked, "SHA-256")
	}
	return strings.Join(checked, "+"), nil
}

// startSHA256 starts hashing the destination part by part, each as soon
// as it and those before it are in place, so that the SHA-256 is ready
// shortly after the last byte rather than a whole pass later. Parts report
// with partDone.
func (d *download) startSHA256(ctx context.Context, wg *sync.WaitGroup) {
	if d.opts.SHA256 == "" {
		return
	}
	n := (d.size + d.opts.PartSize - 1) / d.opts.PartSize
	d.partsDone = make([]chan struct{}, n)
	for i := range d.partsDone {
		d.partsDone[i] = make(chan struct{})
	}
	d.sha256 = make(chan shaResult, 1)
	wg.Go(func() {
		sum, err := d.hashParts(ctx)
		d.sha256 <- shaResult{sum, err}
	})
}

type shaResult struct {
	sum string
	err error
}

// partDone reports that the part starting at off is in place.
func (d *download) partDone(off int64) {
	if d.partsDone != nil {
		close(d.partsDone[off/d.opts.PartSize])
	}
}

// hashParts hashes the parts in order as they complete, through a mapping
// when the destination offers one (a memfd.File does), else by reading
// them back.
func (d *download) hashParts(ctx context.Context) (string, error) {
	read, err := readerOf(d.w)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for i, done := range d.partsDone {
		select {
		case <-done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		start := int64(i) * d.opts.PartSize
		end := min(start+d.opts.PartSize, d.size)
		for off := start; off < end; off += hashChunk {
			b, err := read(off, min(hashChunk, end-off))
			if err != nil {
				return "", fmt.Errorf("s3load: read back for SHA-256: %w", err)
			}
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

const hashChunk = 1 << 20

// readerOf returns a function that reads n bytes at off of w: a slice of
// its mapping if it has one, else through io.ReaderAt into a buffer.
func readerOf(w io.WriterAt) (func(off, n int64) ([]byte, error), error) {
	if m, ok := w.(interface{ Map() ([]byte, error) }); ok {
		b, err := m.Map()
		if err != nil {
			return nil, err
		}
		return func(off, n int64) ([]byte, error) { return b[off : off+n], nil }, nil
	}
	r, ok := w.(io.ReaderAt)
	if !ok {
		return nil, fmt.Errorf("s3load: cannot read back %T to hash it", w)
	}
	buf := make([]byte, hashChunk)
	return func(off, n int64) ([]byte, error) {
		k, err := r.ReadAt(buf[:n], off)
		if int64(k) == n {
			err = nil
		}
		return buf[:k], err
	}, nil
}

func checkSHA256(s string) error {
	if s == "" {
		return nil
	}
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("s3load: Options.SHA256 %q is not a SHA-256 in hex (64 hex digits): copy it from sha256sum's output", s)
	}
	return nil
}

// partSum is the CRC of the bytes of one part written so far, in order.
type partSum struct {
	crc uint64
	n   int64
}

// crcSpec is a reflected CRC as S3 uses them (initial value and final XOR
// all ones), with what it takes to combine the CRCs of adjacent pieces.
type crcSpec struct {
	name   string
	width  int
	poly   uint64 // reflected
	update func(crc uint64, b []byte) uint64
}

var (
	crc32cTable = crc32.MakeTable(crc32.Castagnoli)

	crc32C = &crcSpec{name: "CRC32C", width: 32, poly: crc32.Castagnoli,
		update: func(c uint64, b []byte) uint64 { return uint64(crc32.Update(uint32(c), crc32cTable, b)) }}
	crc64NVME = &crcSpec{name: "CRC64NVME", width: 64, poly: 0x9a6c9329ac4bc9b5,
		update: crc64nvme.Update} // PCLMULQDQ or PMULL: 6x faster than hash/crc64's tables
)

// combine returns the CRC of A+B from crc1 = CRC(A), crc2 = CRC(B) and
// len2 = len(B), as zlib's crc32_combine does: crc1 is run through len2
// zero bytes by repeated squaring of the one-zero-bit operator.
func (c *crcSpec) combine(crc1, crc2 uint64, len2 int64) uint64 {
	if len2 <= 0 {
		return crc1
	}
	odd, even := make([]uint64, c.width), make([]uint64, c.width)
	odd[0] = c.poly
	for n, row := 1, uint64(1); n < c.width; n, row = n+1, row<<1 {
		odd[n] = row
	}
	gf2Square(even, odd) // two zero bits
	gf2Square(odd, even) // four
	for {
		gf2Square(even, odd) // first pass: one zero byte
		if len2&1 != 0 {
			crc1 = gf2Times(even, crc1)
		}
		if len2 >>= 1; len2 == 0 {
			break
		}
		gf2Square(odd, even)
		if len2&1 != 0 {
			crc1 = gf2Times(odd, crc1)
		}
		if len2 >>= 1; len2 == 0 {
			break
		}
	}
	return crc1 ^ crc2
}

func gf2Times(mat []uint64, vec uint64) uint64 {
	var sum uint64
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

func gf2Square(square, mat []uint64) {
	for n := range mat {
		square[n] = gf2Times(mat, mat[n])
	}
}
