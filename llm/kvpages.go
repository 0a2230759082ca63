package llm

// Giving back the pages of the empty KV cache.
//
// llama.cpp allocates the KV cache for the whole context when it creates
// the context, and clears it to zeros, which makes the kernel give it
// memory for every page: 112 MiB for a 1.5B model at 4096 tokens, a tenth
// of the model, held before the first question. A chat writes only the
// cells of the tokens it evaluates (with flash attention, each token's
// keys and values are rows of their own), and reads no cell it has not
// written (the attention mask skips them), so the cache needs memory only
// as the conversation fills it.
//
// The cache is an anonymous private mapping of its own (glibc maps large
// allocations with mmap). After the context is made, each mapping that
// appeared meanwhile where nothing was mapped before, is the size
// llama.cpp logged for a KV buffer and holds zero pages, has those pages
// given back with
// madvise(MADV_DONTNEED): a private anonymous page given back reads as
// zeros again, so nothing anyone could read changes. Pages that are not
// all zeros (the allocator's header) are kept. Chat clears the cache's
// cells without writing its data (llama_memory_clear with data false), so
// that the pages stay given back between conversations.
//
// Clearing the cache is also what a load during the download does last,
// after its last byte, so it is made cheap. Memory a process touches for
// the first time costs more than a write: the kernel zeroes each page and,
// in a microVM such as Lambda's or this machine's, the host backs it on
// first touch. Cleared 4 KiB at a time into such memory, 112 MiB took
// 0.07 to 0.5 s here. Two things make it about 15 ms: while the file is
// still being written, a pool of that many bytes is touched in the
// download's shadow and handed back just before llama.cpp allocates the
// cache (kvPool), so that the kernel has warm pages to give it; and the
// cache's mapping is marked for 2 MiB pages between its allocation and its
// clearing (markHuge), so that the clear takes 56 page faults, not 28,000,
// on those pages. finish takes the mark off before it gives the pages
// back, so that the cache then grows a 4 KiB page at a time again.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/memload/memload/internal/idle"
	"github.com/memload/memload/llm/internal/gguf"
)

// kvLog collects the KV buffer sizes llama.cpp logs while it creates a
// context, and the mappings that existed before.
type kvLog struct {
	before []mapping

	mu    sync.Mutex
	sizes []int64   // bytes, as logged (to 0.01 MiB)
	huge  []mapping // the buffers' chunks, marked for huge pages
}

type mapping struct{ start, end uintptr }

func watchKV() *kvLog {
	k := &kvLog{}
	k.before, _ = mappings(false)
	return k
}

func (k *kvLog) logLine(line string) {
	n, ok := parseKVBuffer(line)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sizes = append(k.sizes, n)
	k.markHuge(n)
}

// markHuge asks the kernel to back the KV buffer of n bytes with huge
// pages while llama.cpp clears it. llama.cpp logs the buffer's size once
// it is allocated and just before it clears it, on the same thread, so
// the buffer is the new chunk of that size. Where the kernel gives no huge
// pages (transparent_hugepage "never"), the mark changes nothing.
func (k *kvLog) markHuge(n int64) {
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		return
	}
	defer mem.Close()
	chunks, err := k.newChunks(mem, []int64{n})
	if err != nil {
		return
	}
	for _, c := range chunks {
		if slices.Contains(k.huge, c) {
			continue
		}
		if madvise(c, unix.MADV_HUGEPAGE) == nil {
			k.huge = append(k.huge, c)
		}
		return
	}
}

// newChunks returns the chunks glibc's malloc mapped on their own since
// the watch began that hold a KV buffer of one of the sizes, reading their
// headers through mem (/proc/self/mem).
func (k *kvLog) newChunks(mem *os.File, sizes []int64) ([]mapping, error) {
	if k.before == nil {
		return nil, nil
	}
	after, err := mappings(true)
	if err != nil {
		return nil, err
	}
	var out []mapping
	for _, r := range newRanges(after, k.before) {
		for _, c := range mmappedChunks(mem, r) {
			if kvSized(int64(c.end-c.start), sizes) {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

func madvise(m mapping, advice int) error {
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, uintptr(advice)); e != 0 {
		return e
	}
	return nil
}

// finish gives back the zero pages of the KV buffers. It returns the
// bytes given back.
func (k *kvLog) finish() (int64, error) {
	k.mu.Lock()
	sizes, huge := k.sizes, k.huge
	k.mu.Unlock()
	for _, c := range huge {
		madvise(c, unix.MADV_NOHUGEPAGE) // before a page is given back: the cache grows by 4 KiB again
	}
	if len(sizes) == 0 {
		return 0, nil
	}
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		return 0, err
	}
	defer mem.Close()
	chunks, err := k.newChunks(mem, sizes)
	if err != nil {
		return 0, err
	}
	var given int64
	for _, c := range chunks {
		n, err := giveBackZeroPages(mem, c)
		given += n
		if err != nil {
			return given, err
		}
	}
	return given, nil
}

// kvSized reports whether a chunk of n bytes (the allocator's header
// included) holds a buffer of one of the sizes, which the log rounds to
// 0.01 MiB.
func kvSized(n int64, sizes []int64) bool {
	for _, s := range sizes {
		if n >= s && n <= s+(16<<10) {
			return true
		}
	}
	return false
}

// newRanges returns the parts of the mappings after that were not mapped
// before. The kernel merges neighbouring mappings, so a buffer mapped
// during the context's creation can be part of a mapping that grew.
func newRanges(after, before []mapping) []mapping {
	var out []mapping
	for _, m := range after {
		parts := []mapping{m}
		for _, o := range before {
			var next []mapping
			for _, p := range parts {
				if o.end <= p.start || p.end <= o.start {
					next = append(next, p)
					continue
				}
				if p.start < o.start {
					next = append(next, mapping{p.start, o.start})
				}
				if o.end < p.end {
					next = append(next, mapping{o.end, p.end})
				}
			}
			parts = next
		}
		out = append(out, parts...)
	}
	return out
}

// mmappedChunks returns the chunks glibc's malloc mapped on their own in
// r, recognised by their header at the start of a page: prev_size, the
// offset an aligned allocation moved the chunk by (0, 16, 32 or 48), then
// the size with IS_MMAPPED set, page-aligned with the offset. Pages that
// start no such chunk are stepped over.
func mmappedChunks(mem *os.File, r mapping) []mapping {
	page := uintptr(os.Getpagesize())
	var out []mapping
	var hdr [64]byte
	for at := r.start; at+page <= r.end; {
		if _, err := mem.ReadAt(hdr[:], int64(at)); err != nil {
			break
		}
		total := uintptr(0)
		for lead := uintptr(0); lead+16 <= uintptr(len(hdr)); lead += 16 {
			prev := binary.LittleEndian.Uint64(hdr[lead:])
			size := binary.LittleEndian.Uint64(hdr[lead+8:])
			const isMmapped, flags = 0x2, 0x7
			if prev == uint64(lead) && size&flags == isMmapped && (lead+uintptr(size&^flags))%page == 0 {
				total = lead + uintptr(size&^flags)
				break
			}
		}
		if total == 0 || at+total > r.end {
			at += page
			continue
		}
		out = append(out, mapping{at, at + total})
		at += total
	}
	return out
}

// giveBackZeroPages gives back the runs of whole pages of m that hold only
// zeros, read through /proc/self/mem, and returns the bytes given back.
func giveBackZeroPages(mem *os.File, m mapping) (int64, error) {
	page := uintptr(os.Getpagesize())
	buf := make([]byte, 1<<20)
	var given int64
	run := uintptr(0) // start of the current run of zero pages, or 0
	flush := func(end uintptr) error {
		if run == 0 || end <= run {
			run = 0
			return nil
		}
		if err := madvise(mapping{run, end}, unix.MADV_DONTNEED); err != nil {
			return fmt.Errorf("madvise: %w", err)
		}
		given += int64(end - run)
		run = 0
		return nil
	}
	for at := m.start; at < m.end; {
		n := min(uintptr(len(buf)), m.end-at)
		if _, err := mem.ReadAt(buf[:n], int64(at)); err != nil {
			return given, err
		}
		for off := uintptr(0); off < n; off += page {
			p := at + off
			if allZero(buf[off : off+page]) {
				if run == 0 {
					run = p
				}
			} else if err := flush(p); err != nil {
				return given, err
			}
		}
		at += n
	}
	return given, flush(m.end)
}

var zeroPage = make([]byte, 64<<10)

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// mappings returns the process's mappings, from /proc/self/maps: all of
// them, or only the private anonymous read-write ones.
func mappings(anonOnly bool) ([]mapping, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode [path]
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || anonOnly && (len(fields) != 5 || fields[1] != "rw-p" || fields[4] != "0") {
			continue
		}
		a, b, ok := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(a, 16, 64)
		end, err2 := strconv.ParseUint(b, 16, 64)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		ms = append(ms, mapping{uintptr(start), uintptr(end)})
	}
	return ms, sc.Err()
}

// kvPool is memory touched while the model's file is still being
// written, handed back just before llama.cpp allocates and clears the KV
// cache, so that the clear finds warm pages.
type kvPool struct {
	// mu is held to touch a step of the pages, and to release them: the
	// release waits for one step at most, not for a touch that a busy CPU
	// holds back at low priority, and unmaps at once, before llama.cpp
	// maps the cache, which may take the same addresses.
	mu       sync.Mutex
	mem      []byte // mapped, and not yet released
	released bool
}

// populateWrite is the advice that touches a range in one call; a test
// makes it fail, to take the path of kernels before 5.14.
var populateWrite = unix.MADV_POPULATE_WRITE

// maxKVPool bounds the pool, whatever the header says.
const maxKVPool = 1 << 30

// newKVPool maps n bytes and touches them on a thread of low priority. It
// returns nil if n is 0.
func newKVPool(n int64) *kvPool {
	n = min(n, maxKVPool)
	if n <= 0 {
		return nil
	}
	p := &kvPool{}
	// At low priority: the download and llama.cpp's load come first,
	// and the pool is needed only after the last byte.
	idle.Go(func() { p.touch(int(n)) })
	return p
}

// touch maps n bytes and touches them, 2 MiB at a time, until they are
// all touched or the pool is released.
func (p *kvPool) touch(n int) {
	p.mu.Lock()
	if p.released {
		p.mu.Unlock()
		return
	}
	mem, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		p.mu.Unlock()
		return
	}
	unix.Madvise(mem, unix.MADV_HUGEPAGE)
	p.mem = mem
	p.mu.Unlock()

	const step = 2 << 20
	page := os.Getpagesize()
	populate := true
	for at := 0; at < n; at += step {
		p.mu.Lock()
		if p.released {
			p.mu.Unlock()
			return
		}
		chunk := mem[at:min(at+step, n)]
		if populate && unix.Madvise(chunk, populateWrite) != nil {
			populate = false // before Linux 5.14 (Lambda's 5.10): a write a page
		}
		if !populate {
			for i := 0; i < len(chunk); i += page {
				chunk[i] = 0
			}
		}
		p.mu.Unlock()
	}
}

// release hands the pool's pages back, touched or not.
func (p *kvPool) release() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.released = true
	if p.mem != nil {
		unix.Munmap(p.mem)
		p.mem = nil
	}
}

// kvCacheBytes estimates the KV cache llama.cpp allocates for a context
// of n tokens from the header, as llama.cpp sizes it for models whose
// every layer attends to the whole context: keys and values in f16, n
// padded to 256 cells. It returns 0 if the header lacks a dimension.
func kvCacheBytes(h *gguf.Header, arch string, n int) int64 {
	layers, ok1 := h.Uint(arch + ".block_count")
	embd, ok2 := h.Uint(arch + ".embedding_length")
	heads, ok3 := h.Uint(arch + ".attention.head_count")
	if !ok1 || !ok2 || !ok3 || heads == 0 || layers > 1<<12 || embd > 1<<20 {
		return 0
	}
	kvHeads, ok := h.Uint(arch + ".attention.head_count_kv")
	if !ok {
		kvHeads = heads
	}
	keyLen, ok := h.Uint(arch + ".attention.key_length")
	if !ok {
		keyLen = embd / heads
	}
	valLen, ok := h.Uint(arch + ".attention.value_length")
	if !ok {
		valLen = embd / heads
	}
	if kvHeads > 1<<12 || keyLen > 1<<16 || valLen > 1<<16 {
		return 0
	}
	cells := (uint64(n) + 255) / 256 * 256
	// In floating point: a header's dimensions can multiply past 2^64.
	b := float64(layers) * float64(cells) * float64(kvHeads) * float64(keyLen+valLen) * 2
	return int64(min(b, maxKVPool))
}
