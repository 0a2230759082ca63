package llm

// Giving back the memfd's pages of repacked tensors.
//
// With repacking on, llama.cpp copies each weight its CPU kernels prefer
// in another layout (AMX tiles, interleaved AVX2 blocks) into a buffer of
// its own, and computes from the copy; the mapped file's pages of those
// tensors are never read again, yet stay mapped (llama.cpp issue #16761),
// so a mapped memfd would hold the weights twice. llama.cpp logs each
// tensor as it starts repacking it ("repack tensor blk.0.attn_q.weight
// with q4_K_8x8", "amx repack tensor ... of type q4_K"); loading is
// sequential, so when the next tensor's line comes, the previous one is
// copied, and its whole pages are punched out of the memfd at once. That
// keeps the peak near the model's size. After the load, everything that
// is neither the header nor a tensor left in the mapping is punched too
// (the pages shared by two repacked tensors, padding).
//
// A punched page reads as zeros: were llama.cpp to read one, its answers
// would change. TestGiveBack compares greedy answers with and without.
// So a tensor llama.cpp creates twice (logged twice as "loading tensor")
// keeps its pages: a model with tied embeddings uses token_embd.weight
// repacked as its output, and by row from the mapping as its input
// (TestGiveBackTied). A tensor not seen created at all keeps them too.
//
// A load that starts while the file is written (EarlyLoad) repacks tensors
// before the writer is done with them: s3load reads its destination back
// to hash it. Their pages are then given back only once the writer has
// released them (EarlyLoad.Verified, or Finish); until then the punches
// wait in a list.
//
// The kernel refuses to punch a memfd sealed with F_SEAL_WRITE: a file to
// give pages back from must be sealed after the load, if at all
// (s3load.Options.NoSeal).

import (
	"errors"
	"os"
	"sort"
	"sync"

	"github.com/memload/memload/llm/internal/gguf"
	"github.com/memload/memload/memfd"
)

// pageFile is a memory file whose pages can be given back: a
// *memfd.File, or an EarlyLoad's own descriptor of one.
type pageFile interface {
	PunchHole(off, n int64) error
	Size() int64
}

type span struct{ off, end int64 } // file offsets, [off, end)

type repackLog struct {
	f       pageFile
	tensors map[string]span
	page    int64

	mu       sync.Mutex
	created  map[string]int // times llama.cpp created each tensor
	repacked map[string]bool
	last     string // the tensor being repacked
	released int64  // bytes [0, released) may be given back
	pending  []span // to give back once released
	done     []span // given back, perhaps overlapping
	err      error  // the first punch that failed: no more tries
}

// watchRepack returns a watcher of llama.cpp's log for repacked tensors of
// the model in f, described by h. Pages past released are given back
// only once release says so: a writer may still read them back (s3load
// hashes what it wrote).
func watchRepack(f pageFile, h *gguf.Header, released int64) *repackLog {
	r := &repackLog{f: f, tensors: map[string]span{}, created: map[string]int{}, repacked: map[string]bool{},
		page: int64(os.Getpagesize()), released: released}
	for _, t := range h.Tensors {
		off := h.DataOffset + int64(t.Offset)
		r.tensors[t.Name] = span{off, off + int64(t.Bytes)}
	}
	return r
}

// logLine sees one line of llama.cpp's log.
func (r *repackLog) logLine(line string) {
	if name, ok := parseCreateTensor(line); ok {
		r.mu.Lock()
		r.created[name]++
		r.mu.Unlock()
		return
	}
	m, ok := parseRepack(line)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.tensors[m.tensor]; !ok {
		return
	}
	if r.last != "" && r.created[r.last] == 1 {
		s := r.tensors[r.last]
		r.punch(s.off, s.end)
	}
	r.last = m.tensor
	r.repacked[m.tensor] = true
}

// finish gives back (or marks to give back, once released) what is left:
// every page that holds neither the header nor a tensor llama.cpp
// computes from in the mapping. It returns the bytes given back so far.
func (r *repackLog) finish(h *gguf.Header) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.repacked) == 0 {
		return 0, nil
	}
	keep := []span{{0, h.DataOffset}}
	for name, s := range r.tensors {
		if !r.repacked[name] || r.created[name] != 1 {
			keep = append(keep, s)
		}
	}
	sort.Slice(keep, func(i, j int) bool { return keep[i].off < keep[j].off })
	at := int64(0)
	for _, k := range keep {
		r.punch(at, k.off)
		at = max(at, k.end)
	}
	r.punch(at, r.f.Size())
	return r.given(), r.err
}

// release lets the pages of bytes [0, n) be given back, and gives back
// those waiting for it. It returns the bytes given back so far.
func (r *repackLog) release(n int64) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.released = max(r.released, n)
	pending := r.pending
	r.pending = nil
	for _, s := range pending {
		r.punch(s.off, s.end)
	}
	return r.given(), r.err
}

// given returns the bytes given back: a tensor's pages are punched when
// the next one is announced, and again with the gaps at the end.
func (r *repackLog) given() int64 {
	sort.Slice(r.done, func(i, j int) bool { return r.done[i].off < r.done[j].off })
	var n, at int64
	for _, s := range r.done {
		if s.end > at {
			n += s.end - max(s.off, at)
			at = s.end
		}
	}
	return n
}

// gaveBack reports whether any page was given back.
func (r *repackLog) gaveBack() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.done) > 0
}

// drop forgets the pages waiting to be given back (a failed load).
func (r *repackLog) drop() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.pending = nil
	r.mu.Unlock()
}

// punch gives back the whole pages inside [off, end), or marks them to,
// once released.
func (r *repackLog) punch(off, end int64) {
	off = (off + r.page - 1) / r.page * r.page
	end = end / r.page * r.page
	if r.err != nil || end <= off {
		return
	}
	if end > r.released {
		r.pending = append(r.pending, span{off, end})
		return
	}
	if err := r.f.PunchHole(off, end-off); err != nil {
		r.err = err
		return
	}
	r.done = append(r.done, span{off, end})
}

// errSealedHint explains a refused punch.
func errSealedHint(err error) string {
	if errors.Is(err, memfd.ErrSealed) {
		return "the memfd is sealed: seal it after LoadFile (s3load: Options.NoSeal), or set Options.KeepRepacked"
	}
	return err.Error()
}
