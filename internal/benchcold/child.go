package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/memload/memload/internal/bench/variant"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/s3load"
)

// target is what a child process loads, and how it reaches the shaper.
type target struct {
	variant.Target
	SHA256        string // the model's, which every variant checks
	StartUnixNano int64  // when the parent started this process
	NoRepack      bool   // llm.Options.NoRepack
}

// result is what a child prints, as one JSON line: each phase's end, from
// the process's start.
type result struct {
	Phases map[string]time.Duration
	// CPU is the CPU time this process had used, user and system, when
	// the last byte landed: the client's share of the machine.
	CPU   time.Duration
	Parts int  // memload's ranged GETs; 0 for the peers
	Early bool // llama.cpp loaded the model while it downloaded
}

// watch records when the first and the last byte of the object landed.
type watch struct {
	mu          sync.Mutex
	size, done  int64
	first, last time.Time
	cpu         time.Duration // the process's CPU time at last
}

// add counts n more bytes written; reached, if not negative, sets the
// count instead (memload's Progress reports the running total).
func (w *watch) add(n, reached int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if w.first.IsZero() {
		w.first = now
	}
	if reached >= 0 {
		w.done = reached
	} else {
		w.done += n
	}
	if w.done >= w.size && w.last.IsZero() {
		w.last = now
		w.cpu = selfCPU()
	}
}

// counted passes writes to a peer's memfd through a watch.
type counted struct {
	io.WriterAt
	w *watch
}

func (c counted) WriteAt(p []byte, off int64) (int, error) {
	n, err := c.WriterAt.WriteAt(p, off)
	c.w.add(int64(n), -1)
	return n, err
}

// runChild goes down the chatbot's path once with the named variant: S3
// through the shaper into a memfd, its SHA-256 checked, llama.cpp loaded
// from it, one token generated.
func runChild(v string, t target) error {
	began := time.Unix(0, t.StartUnixNano)
	res := result{Phases: map[string]time.Duration{}}
	mark := func(name string, at time.Time) { res.Phases[name] = at.Sub(began) }
	ctx := context.Background()
	client, err := variant.NewClient(t.Target)
	if err != nil {
		return err
	}
	mark("client", time.Now())
	w := &watch{size: t.Size}
	repack := func(o *llm.Options) { o.NoRepack = t.NoRepack }
	// memload's variants load llama.cpp through an llm.EarlyLoad, as the
	// chatbot does: without repacking, the load runs while the weights
	// download. The peers' users load after the download.
	early := llm.NewEarlyLoad(ctx, repack)
	// memload hashes each part as it lands (Options.SHA256), as the
	// chatbot does with MODEL_SHA256; the peers' users hash the memfd
	// after the download. Unsealed, as the chatbot's: llm.LoadFile then
	// gives back the memfd's pages of the weights llama.cpp repacks, and
	// the time that takes counts before the model is ready.
	l, err := variant.Download(ctx, client, v, t.Target,
		func(dst io.WriterAt) io.WriterAt { return counted{dst, w} },
		func(o *s3load.Options) {
			o.SHA256 = t.SHA256
			o.NoSeal = true
			o.Progress = func(done, total int64) { w.add(0, done) }
			o.OnPrefix = early.Written
		})
	if err != nil {
		_, _ = early.Finish(nil, err) // closes a model loaded early
		return err
	}
	defer l.Close()
	res.CPU = w.cpu
	mark("first write", w.first)
	mark("last byte", w.last)
	if l.Plain != nil {
		sum, err := sha256Of(l.Plain)
		if err != nil {
			return err
		}
		if sum != t.SHA256 {
			return fmt.Errorf("%s loaded bytes with SHA-256 %s, want %s", v, sum, t.SHA256)
		}
	}
	mark("verified", time.Now())
	res.Parts = l.Stats.Parts

	var m *llm.Model
	if l.File != nil {
		m, err = early.Finish(l.File, nil)
		res.Early = early.Stats().Early
	} else {
		// What a user of the SDK's downloaders does: hand llama.cpp the
		// memfd's path.
		m, err = llm.Load(ctx, fmt.Sprintf("/proc/self/fd/%d", l.Plain.Fd()), repack)
	}
	if err != nil {
		return err
	}
	defer m.Close()
	mark("llama.cpp loaded", time.Now())
	if _, err := m.Chat(ctx, []llm.Message{{Role: llm.RoleUser, Content: "Hi"}}, nil,
		func(o *llm.ChatOptions) { o.Temperature, o.MaxTokens = 0, 1 }); err != nil {
		return err
	}
	mark("first token", time.Now())
	return json.NewEncoder(os.Stdout).Encode(res)
}

func sha256Of(f *os.File) (string, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return "", err
	}
	defer unix.Munmap(b)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// selfCPU returns the CPU time this process has used, user and system.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
