package s3load

import (
	"io"
	"sync"
)

// schedule hands out the parts to start: those a consumer asked for first
// (Options.Order), in its order, then the rest from the start. Parts are
// chosen when a connection is free, so an order that comes midway applies
// to every part not yet started, and no part waits for one. Its record
// grows only with the parts started out of order, not with the object's
// claimed size.
type schedule struct {
	mu       sync.Mutex
	parts    int64
	partSize int64
	low      int64              // every part below low has started
	early    map[int64]struct{} // parts at or above low that started out of order
	first    []int64            // parts asked for first, in order; some may have started
}

// newSchedule schedules parts of partSize, part 0 already started (it is
// the first response).
func newSchedule(parts, partSize int64) *schedule {
	return &schedule{parts: parts, partSize: partSize, low: min(1, parts), early: map[int64]struct{}{}}
}

// next returns the part to start now, and false when every part has
// started.
func (s *schedule) next() (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.first) > 0 {
		i := s.first[0]
		s.first = s.first[1:]
		if s.startedLocked(i) {
			continue
		}
		s.early[i] = struct{}{}
		return i, true
	}
	for {
		if s.low >= s.parts {
			return 0, false
		}
		if _, ok := s.early[s.low]; !ok {
			break
		}
		delete(s.early, s.low)
		s.low++
	}
	s.low++
	return s.low - 1, true
}

func (s *schedule) startedLocked(i int64) bool {
	_, ok := s.early[i]
	return i < s.low || ok
}

// prefer asks for the parts that hold ranges ([start, end) of the object,
// most wanted first) to start before the rest. Bytes outside the object
// are ignored.
func (s *schedule) prefer(ranges [][2]int64, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	asked := map[int64]bool{}
	for _, r := range ranges {
		start, end := max(r[0], 0), min(r[1], size)
		if start >= end {
			continue
		}
		for i := start / s.partSize; i <= (end-1)/s.partSize; i++ {
			if !asked[i] && !s.startedLocked(i) {
				asked[i] = true
				s.first = append(s.first, i)
			}
		}
	}
}

// askOrder offers Options.Order the run of bytes in place from the start,
// if it grew since Order was last asked, until Order answers. It is
// called by the goroutine that finished a part, outside the locks: the
// header a consumer parses may take a good part of a second on a busy
// CPU, and the other parts go on meanwhile. If another goroutine is
// asking, it returns at once; that one asks again if the run grew while
// Order ran, and a growth it misses is offered after the next part.
func (d *download) askOrder() {
	if d.opts.Order == nil || d.ordered.Load() {
		return
	}
	r, ok := d.w.(io.ReaderAt)
	if !ok || !d.asking.CompareAndSwap(false, true) {
		return
	}
	defer d.asking.Store(false)
	for !d.ordered.Load() {
		_, next := d.order.sum()
		if next >= numParts(d.size, d.opts.PartSize) {
			return // all in: nothing left to order
		}
		n := max(next*d.opts.PartSize, d.inPlace.Load()) // < d.size: no overflow
		if n <= d.asked {
			return
		}
		d.asked = n
		if ranges := d.opts.Order(prefixReader{r, n}, n, d.size); ranges != nil {
			d.ordered.Store(true)
			d.sched.prefer(ranges, d.size)
		}
	}
}

// prefixReader reads bytes [0, n) of the destination, and nothing past
// them, for Options.Order.
type prefixReader struct {
	r io.ReaderAt
	n int64
}

func (p prefixReader) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.n {
		return 0, io.EOF
	}
	if rest := p.n - off; int64(len(b)) > rest {
		n, err := p.r.ReadAt(b[:rest], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return p.r.ReadAt(b, off)
}
