package s3load

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/minio/crc64nvme"
)

// headResult is HeadObject's answer about the object's size and checksum.
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
	if err == nil {
		if r, ok := awsmiddleware.GetRawResponse(out.ResultMetadata).(*smithyhttp.Response); ok && r != nil {
			if from := redirectedFrom(r.Response); from != nil {
				out, err = nil, fmt.Errorf("%s", followedHint(from, r.Request))
			}
		}
	}
	if err != nil {
		err = (&Error{Object: d.obj, Op: "HeadObject", End: -1, Attempt: 1, Err: err}).classify()
	}
	return headResult{out, err}
}

// checkHead compares HeadObject's answer with the first GET's, once that
// has pinned the object's version, and picks the full-object checksum to
// verify. It returns why there is none to verify, or an error if the two
// answers contradict each other. unsatisfiable is a first GET answered
// 416, which only HeadObject can confirm as an empty object.
func (d *download) checkHead(h headResult, unsatisfiable bool) (unverified string, err error) {
	fail := func(kind error, format string, args ...any) error {
		return &Error{Object: d.obj, Op: "HeadObject", End: -1, Attempt: 1, kind: kind, Err: fmt.Errorf(format, args...)}
	}
	if unsatisfiable {
		if h.err != nil {
			return "", h.err // the object's size is unknown
		}
		if h.out.ContentLength == nil || *h.out.ContentLength != 0 {
			return "", fail(ErrBadResponse, "GetObject answered 416 Range Not Satisfiable, but HeadObject gives the object's size as %s, not 0",
				sizeString(h.out.ContentLength))
		}
		d.etag = aws.ToString(h.out.ETag)
	}
	switch {
	case d.opts.NoChecksum:
		return "NoChecksum is set", nil
	case h.err != nil:
		d.log.Warn("s3load: HeadObject failed, so the S3 checksum is not verified", "err", h.err)
		return "HeadObject failed, so the object's checksum is unknown: " + h.err.Error(), nil
	case d.versionID != "" && aws.ToString(h.out.VersionId) != d.versionID:
		return "HeadObject answered for another version than the one loaded (a newer one exists)", nil
	case aws.ToString(h.out.ETag) == "":
		return "HeadObject gave no ETag, so its checksum cannot be tied to the version loaded", nil
	case d.etag != "" && aws.ToString(h.out.ETag) != d.etag:
		return "", fail(ErrObjectChanged, "ETag %s differs from %s of the first GET", aws.ToString(h.out.ETag), d.etag)
	case h.out.ContentLength != nil && *h.out.ContentLength != d.size:
		return "", &Error{Object: d.obj, Op: "HeadObject", End: -1, Attempt: 1, kind: ErrBadResponse,
			Err:  fmt.Errorf("HeadObject gives the object's size as %d bytes, GetObject's Content-Range as %d", *h.out.ContentLength, d.size),
			hint: "the server contradicts itself about the same version: check the endpoint and any proxy in front of it"}
	case h.out.ChecksumType == types.ChecksumTypeComposite:
		return "the object's checksum is composite (a checksum of its upload's parts), which needs the part sizes", nil
	}
	spec, value := crc64NVME, aws.ToString(h.out.ChecksumCRC64NVME)
	if value == "" {
		spec, value = crc32C, aws.ToString(h.out.ChecksumCRC32C)
	}
	if value == "" || strings.Contains(value, "-") {
		return "the object has no full-object CRC64NVME or CRC32C checksum", nil
	}
	raw, err := base64.StdEncoding.DecodeString(value)
	if err != nil || len(raw) != spec.width/8 {
		d.log.Warn("s3load: ignoring a malformed checksum", "algorithm", spec.name, "value", value)
		return fmt.Sprintf("HeadObject's %s %q is malformed", spec.name, value), nil
	}
	var want uint64
	for _, b := range raw {
		want = want<<8 | uint64(b)
	}
	d.crc, d.crcWant = spec, want
	return "", nil
}

func sizeString(n *int64) string {
	if n == nil {
		return "missing"
	}
	return fmt.Sprint(*n)
}

// requireChecksum fails a load that RequireChecksum says must be verified
// but has nothing to verify it with.
func (d *download) requireChecksum(unverified string) error {
	if !d.opts.RequireChecksum || d.crc != nil || d.opts.SHA256 != "" {
		return nil
	}
	return &Error{Object: d.obj, Op: "verify", End: -1, Attempt: 1, kind: ErrNotVerified, Err: errors.New(unverified),
		hint: "RequireChecksum is set: upload the object with a full-object checksum (CRC64NVME, S3's default), or set SHA256"}
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
		sum, parts := d.order.sum()
		if parts != numParts(d.size, d.opts.PartSize) || sum.n != d.size || sum.crc != d.crcWant {
			return "", fail("%s of the %d bytes loaded is %x, S3 says %x", d.crc.name, sum.n, sum.crc, d.crcWant)
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

// inOrder records the parts in place, which finish in any order, and
// folds their CRCs in object order over the run of parts from the first.
// Its memory grows with the parts that finished ahead of an unfinished
// one, never with the size a server claims.
type inOrder struct {
	spec  *crcSpec // nil: no CRC to combine
	moved chan struct{}
	grown func(next int64) // called with mu held when next grows, or nil

	mu    sync.Mutex
	next  int64             // parts 0..next-1 are in place
	sofar partSum           // their CRC
	ahead map[int64]partSum // parts in place after the first missing one
}

func newInOrder(spec *crcSpec, grown func(next int64)) *inOrder {
	return &inOrder{spec: spec, moved: make(chan struct{}, 1), grown: grown, ahead: map[int64]partSum{}}
}

// done records that part i is in place, with the CRC of its bytes.
func (q *inOrder) done(i int64, s partSum) {
	q.mu.Lock()
	q.ahead[i] = s
	moved := false
	for {
		s, ok := q.ahead[q.next]
		if !ok {
			break
		}
		delete(q.ahead, q.next)
		if q.spec != nil {
			q.sofar.crc = q.spec.combine(q.sofar.crc, s.crc, s.n)
			q.sofar.n += s.n
		}
		q.next++
		moved = true
	}
	if moved && q.grown != nil {
		q.grown(q.next)
	}
	q.mu.Unlock()
	if moved {
		select {
		case q.moved <- struct{}{}:
		default:
		}
	}
}

// grown returns what records the bytes in place from the first of parts
// parts, and tells Options.OnPrefix.
func (d *download) grown(parts int64) func(next int64) {
	return func(next int64) {
		n := d.size
		if next < parts {
			n = next * d.opts.PartSize // < d.size: no overflow
		}
		if n <= d.inPlace.Load() {
			return // told already, as the first part arrived
		}
		d.inPlace.Store(n)
		if d.opts.OnPrefix != nil {
			d.opts.OnPrefix(d.w, n)
		}
	}
}

// sum returns the CRC of the parts in place from the first, and how many.
func (q *inOrder) sum() (partSum, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.sofar, q.next
}

// startFollow starts following the parts in place from the first, each
// as soon as it and those before it are in place: hashing them, with
// SHA256, so that the SHA-256 is ready shortly after the last byte rather
// than a whole pass later; then telling Options.OnRelease.
func (d *download) startFollow(ctx context.Context, wg *sync.WaitGroup, parts int64) {
	if d.opts.SHA256 == "" && d.opts.OnRelease == nil {
		return
	}
	if d.opts.SHA256 != "" {
		d.sha256 = make(chan shaResult, 1)
	}
	wg.Go(func() {
		sum, err := d.follow(ctx, parts)
		if d.sha256 != nil {
			d.sha256 <- shaResult{sum, err}
		}
	})
}

type shaResult struct {
	sum string
	err error
}

// follow hashes the parts in order as they come in place, with SHA256,
// through a mapping when the destination offers one (a memfd.File does),
// else by reading them back; and releases each run once hashed.
func (d *download) follow(ctx context.Context, parts int64) (string, error) {
	var read func(off, n int64) ([]byte, error)
	h := sha256.New()
	if d.opts.SHA256 != "" {
		var err error
		if read, err = readerOf(d.w); err != nil {
			return "", &Error{Object: d.obj, Op: "read", End: -1, Attempt: 1, Err: err, kind: ErrDestination}
		}
	}
	for i := int64(0); i < parts; {
		_, ready := d.order.sum()
		if ready <= i {
			select {
			case <-d.order.moved:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			continue
		}
		start, end := i*d.opts.PartSize, d.size // i < ready <= parts: no overflow
		if ready < parts {
			end = ready * d.opts.PartSize
		}
		for off := start; read != nil && off < end; off += min(hashChunk, end-off) {
			b, err := read(off, min(hashChunk, end-off))
			if err != nil {
				return "", &Error{Object: d.obj, Op: "read", Start: off, End: off + min(hashChunk, end-off) - 1, Attempt: 1,
					Err: fmt.Errorf("read back for SHA-256: %w", err), kind: ErrDestination}
			}
			h.Write(b)
		}
		d.release(end)
		i = ready
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// release tells Options.OnRelease that the load is done with bytes
// [0, n), while the background reservation waits (reserveDown).
func (d *download) release(n int64) {
	if d.opts.OnRelease == nil {
		return
	}
	d.releaseMu.Lock()
	defer d.releaseMu.Unlock()
	d.opts.OnRelease(d.w, n)
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
		return invalid("s3load: Options.SHA256 %q is not a SHA-256 in hex (64 hex digits): copy it from sha256sum's output", s)
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
