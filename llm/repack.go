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
//
// The kernel refuses to punch a memfd sealed with F_SEAL_WRITE: a file to
// give pages back from must be sealed after the load, if at all
// (s3load.Options.NoSeal).

import (
	"errors"
	"os"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/memload/memload/llm/internal/gguf"
	"github.com/memload/memload/memfd"
)

var repackLine = regexp.MustCompile(`repack tensor (\S+) (?:with|of type) `)

// repacking is the load whose log is being watched, if any.
var repacking atomic.Pointer[repackLog]

type span struct{ off, end int64 } // file offsets, [off, end)

type repackLog struct {
	f       *memfd.File
	tensors map[string]span
	page    int64

	mu       sync.Mutex
	repacked map[string]bool
	last     string // the tensor being repacked
	held     int64  // bytes of memory the file held at the start
	err      error  // the first punch that failed: no more tries
}

// watchRepack starts watching llama.cpp's log for repacked tensors of the
// model in f, described by h.
func watchRepack(f *memfd.File, h *gguf.Header) *repackLog {
	r := &repackLog{f: f, tensors: map[string]span{}, repacked: map[string]bool{}, page: int64(os.Getpagesize()), held: memoryHeld(f)}
	for _, t := range h.Tensors {
		off := h.DataOffset + int64(t.Offset)
		r.tensors[t.Name] = span{off, off + int64(t.Bytes)}
	}
	repacking.Store(r)
	return r
}

// logLine sees one line of llama.cpp's log.
func (r *repackLog) logLine(line string) {
	m := repackLine.FindStringSubmatch(line)
	if m == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.tensors[m[1]]; !ok {
		return
	}
	if r.last != "" {
		s := r.tensors[r.last]
		r.punch(s.off, s.end)
	}
	r.last = m[1]
	r.repacked[m[1]] = true
}

// finish stops watching and punches what is left: every page that holds
// neither the header nor a tensor llama.cpp computes from in the mapping.
// It returns the bytes given back.
func (r *repackLog) finish(h *gguf.Header) (int64, error) {
	repacking.CompareAndSwap(r, nil)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.repacked) == 0 {
		return 0, nil
	}
	keep := []span{{0, h.DataOffset}}
	for name, s := range r.tensors {
		if !r.repacked[name] {
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
	return r.held - memoryHeld(r.f), r.err
}

// memoryHeld returns the bytes of memory f holds.
func memoryHeld(f *memfd.File) int64 {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}

// stop stops watching without punching more (a failed load).
func (r *repackLog) stop() { repacking.CompareAndSwap(r, nil) }

// punch gives back the whole pages inside [off, end).
func (r *repackLog) punch(off, end int64) {
	off = (off + r.page - 1) / r.page * r.page
	end = end / r.page * r.page
	if r.err != nil || end <= off {
		return
	}
	if err := r.f.PunchHole(off, end-off); err != nil {
		r.err = err
	}
}

// errSealedHint explains a refused punch.
func errSealedHint(err error) string {
	if errors.Is(err, memfd.ErrSealed) {
		return "the memfd is sealed: seal it after LoadFile (s3load: Options.NoSeal), or set Options.KeepRepacked"
	}
	return err.Error()
}
