package s3load

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// copyPart streams a part's body to its offset, closes the body, and
// returns how many bytes it wrote: bytes p.start to p.start+n-1 are in
// place even when it fails. Every byte written goes through d.written, in
// order, once (progress and checksums depend on it).
//
// Why a buffer and WriteAt (pwrite on a memfd) rather than reading the body
// straight into a writable mapping of the memfd, which saves one copy:
// measured on a 1 GiB memfd (BENCHMARKS.md), a mapping costs more CPU than
// the copy it saves. Its page tables are filled one 4 KiB page at a time,
// by faults or by MAP_POPULATE (0.37 CPU-s/GiB for MAP_POPULATE alone),
// while pwrite copies 1 MiB per call into pages that fallocate already
// reserved (0.25-0.3 CPU-s/GiB); mapped pages also count in the process's
// RSS. Buffer sizes from 64 KiB to 1 MiB cost the same within noise.
func (d *download) copyPart(ctx context.Context, p *part) (int64, error) {
	defer p.body.Close()
	buf := d.buffer()
	defer d.bufs.Put(buf)
	var done int64
	for want := p.end - p.start + 1; done < want; {
		n, err := io.ReadFull(p.body, (*buf)[:min(int64(len(*buf)), want-done)])
		if n > 0 {
			off := p.start + done
			if _, werr := d.w.WriteAt((*buf)[:n], off); werr != nil {
				return done, &Error{Object: d.obj, Op: "write", Start: off, End: off + int64(n) - 1, Attempt: p.attempt, Err: werr, kind: ErrDestination}
			}
			done += int64(n)
			d.written(p, (*buf)[:n])
			if p.start < d.opts.PartSize {
				d.headGrew(p.start + done)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return done, ctx.Err()
			}
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				err = fmt.Errorf("body ended %d bytes early: %w", want-done, io.ErrUnexpectedEOF)
			}
			return done, (&Error{Object: d.obj, Op: "GetObject", Start: p.start, End: p.end, Attempt: p.attempt, Err: err}).classify()
		}
	}
	return done, nil
}

func (d *download) buffer() *[]byte {
	if b, ok := d.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, min(bufferSize, d.opts.PartSize))
	return &b
}

// headGrew tells of the first part's bytes [0, n) in place while the part
// is still arriving: the head of the object is what a consumer starts on
// (llama.cpp on a GGUF header of a few MiB), and a first part of 16 MiB,
// sharing the link with the others, comes whole only after a good part of
// a second on a fast link. It tells OnPrefix, under the lock its calls for
// whole parts take, and offers Order the head. Once the first part is
// recorded in place, whole parts take over.
func (d *download) headGrew(n int64) {
	q := d.order
	q.mu.Lock()
	if q.next > 0 || n <= d.inPlace.Load() {
		q.mu.Unlock()
		return
	}
	d.inPlace.Store(n)
	if d.opts.OnPrefix != nil {
		d.opts.OnPrefix(d.w, n)
	}
	q.mu.Unlock()
	d.askOrder()
}
