package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/memload/memload/internal/bench/variant"
	"github.com/memload/memload/memfd"
	"github.com/memload/memload/s3load"
)

// target is what a child process downloads, and how it reaches the server.
type target struct {
	variant.Target
	Verify        bool   // print the SHA-256 of what was loaded
	SHA256        string // coldstart: expect this SHA-256 (Options.SHA256)
	StartUnixNano int64  // when the parent started this process
}

// result is what a child prints, as one JSON line.
type result struct {
	Load   time.Duration            // from before the S3 client was made to the object in a memfd
	HWM    int64                    // peak RSS in bytes (VmHWM: rusage's maxrss starts from the parent's RSS at fork)
	User   time.Duration            // CPU time of the whole process, from getrusage when the object is in place:
	Sys    time.Duration            // freeing the memfd afterwards is not the loader's work
	SHA256 string                   `json:",omitempty"`
	Phases map[string]time.Duration `json:",omitempty"` // cold start only, each from process start
}

// runChild downloads the target once with the named variant, into a memfd,
// and prints a result. Its CPU time and peak RSS are read by the parent.
func runChild(v string, t target) error {
	phases := map[string]time.Duration{}
	began := time.Unix(0, t.StartUnixNano)
	mark := func(name string) { phases[name] = time.Since(began) }
	mark("main")
	ctx := context.Background()
	start := time.Now()
	client, err := variant.NewClient(t.Target)
	if err != nil {
		return err
	}
	mark("client")
	var f *memfd.File  // memload's result, or a floor
	var plain *os.File // a peer's result in its own memfd
	name, params, _ := strings.Cut(v, ":")
	switch strings.TrimSuffix(name, "+memfd") {
	case "none":
		// Process start-up only: the baseline for CPU and RSS.
	case "floor":
		// No network: what filling the memfd alone costs, the part of
		// every variant's CPU time that no downloader can avoid.
		// floor:noreserve skips fallocate; floor:map copies into a
		// MAP_POPULATE mapping instead of calling pwrite.
		f, err = memfd.New(t.Key, t.Size, func(o *memfd.Options) { o.NoReserve = params == "noreserve" })
		if err != nil {
			return err
		}
		if err := fill(f, t.Size, params == "map"); err != nil {
			return err
		}
	case "memload", "coldstart":
		var firstWrite time.Time
		opts := func(o *s3load.Options) {
			if name == "coldstart" {
				o.SHA256 = t.SHA256
				o.Progress = func(done, total int64) {
					if firstWrite.IsZero() {
						firstWrite = time.Now()
					}
				}
			}
		}
		l, err := variant.Download(ctx, client, strings.Replace(v, "coldstart", "memload", 1), t.Target, nil, opts)
		if err != nil {
			return err
		}
		f = l.File
		if name == "coldstart" {
			phases["first response"] = phases["client"] + l.Stats.FirstByte
			phases["first write"] = firstWrite.Sub(began)
			phases["last byte"] = phases["client"] + l.Stats.Elapsed
			mark("sealed")
			if _, err := sha256Of(f); err != nil {
				return err
			}
			mark("sha256")
		}
	case "net":
		// memload's download with nowhere to put the bytes: what the
		// network path (sockets, TLS, HTTP, SDK) costs without the memfd.
		if _, err := s3load.New(client).LoadTo(ctx, "s3://"+t.Bucket+"/"+t.Key, discard{}); err != nil {
			return err
		}
	case "manager", "transfermanager":
		l, err := variant.Download(ctx, client, v, t.Target, nil)
		if err != nil {
			return err
		}
		if l.File != nil {
			f = l.File
		} else {
			plain = l.Plain
		}
	default:
		return fmt.Errorf("unknown variant %q", v)
	}
	r := result{Load: time.Since(start), HWM: peakRSS()}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return err
	}
	r.User, r.Sys = time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
	if name == "coldstart" {
		r.Phases = phases
	}
	var loaded io.ReaderAt
	if f != nil {
		loaded = f
		defer f.Close()
	} else if plain != nil {
		loaded = plain
		defer plain.Close()
	}
	if t.Verify && loaded != nil {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(loaded, 0, t.Size)); err != nil {
			return err
		}
		r.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// discard is an io.WriterAt that keeps nothing.
type discard struct{}

func (discard) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

func sha256Of(f *memfd.File) (string, error) {
	b, err := f.Map()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// peakRSS reads VmHWM from /proc/self/status.
func peakRSS() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// fill writes size bytes into f, 1 MiB at a time, with pwrite or through a
// shared writable mapping.
func fill(f *memfd.File, size int64, mapped bool) error {
	buf := make([]byte, 1<<20)
	if !mapped {
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
				return err
			}
		}
		return nil
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return err
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		copy(m[off:], buf[:min(int64(len(buf)), size-off)])
	}
	return unix.Munmap(m)
}
