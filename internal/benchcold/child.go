package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/memload/memload"
	"github.com/memload/memload/internal/bench/variant"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/memfd"
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

	var m *llm.Model
	if name, _, _ := strings.Cut(v, ":"); name == "memload" {
		// memload's variants go down the chatbot's own path,
		// memload.Load: the SHA-256 checked as the parts land, llama.cpp
		// loaded during the download where it can be, the memfd's pages
		// of repacked weights given back before the model is ready.
		shape, err := memloadShape(v)
		if err != nil {
			return err
		}
		var st memload.Stats
		m, st, err = memload.Load(ctx, client, "s3://"+t.Bucket+"/"+t.Key, func(o *memload.Options) {
			o.SHA256 = t.SHA256
			o.LLMOptions = append(o.LLMOptions, repack)
			o.S3Options = append(o.S3Options, shape, func(o *s3load.Options) {
				o.Progress = func(done, total int64) { w.add(0, done) }
			})
		})
		if err != nil {
			return err
		}
		defer m.Close()
		res.Parts, res.Early = st.Download.Parts, st.Model.Early
		mark("verified", st.Verified)
		mark("llama.cpp loaded", st.Ready)
	} else {
		// What a user of the SDK's downloaders does: download into a
		// memfd, hash it, hand llama.cpp the memfd's path.
		l, err := variant.Download(ctx, client, v, t.Target,
			func(dst io.WriterAt) io.WriterAt { return counted{dst, w} })
		if err != nil {
			return err
		}
		defer l.Close()
		var fd uintptr // the peer's memfd, or memload's with +memfd
		if l.File != nil {
			fd = l.File.Fd()
		} else {
			fd = l.Plain.Fd()
		}
		sum, err := sha256Of(int(fd), t.Size)
		if err != nil {
			return err
		}
		if sum != t.SHA256 {
			return fmt.Errorf("%s loaded bytes with SHA-256 %s, want %s", v, sum, t.SHA256)
		}
		mark("verified", time.Now())
		if m, err = llm.Load(ctx, fmt.Sprintf("/proc/self/fd/%d", fd), repack); err != nil {
			return err
		}
		defer m.Close()
		mark("llama.cpp loaded", time.Now())
	}
	res.CPU = w.cpu
	mark("first write", w.first)
	mark("last byte", w.last)
	if _, err := m.Chat(ctx, []llm.Message{{Role: llm.RoleUser, Content: "Hi"}}, nil,
		func(o *llm.ChatOptions) { o.Temperature, o.MaxTokens = 0, 1 }); err != nil {
		return err
	}
	mark("first token", time.Now())
	return json.NewEncoder(os.Stdout).Encode(res)
}

// memloadShape is the download shape of a memload variant, as
// variant.Download sets it: memload (defaults), memload:seed,
// memload:noreserve or memload:P:C.
func memloadShape(v string) (func(*s3load.Options), error) {
	_, params, _ := strings.Cut(v, ":")
	switch params {
	case "":
		return func(*s3load.Options) {}, nil
	case "seed":
		return func(o *s3load.Options) { o.PartSize, o.Concurrency = 100<<20, runtime.NumCPU() }, nil
	case "noreserve":
		return func(o *s3load.Options) {
			o.MemfdOptions = append(o.MemfdOptions, func(m *memfd.Options) { m.NoReserve = true })
		}, nil
	}
	p, c, err := variant.ParseShape(params)
	if err != nil {
		return nil, err
	}
	return func(o *s3load.Options) { o.PartSize, o.Concurrency = p, c }, nil
}

func sha256Of(fd int, size int64) (string, error) {
	b, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
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
