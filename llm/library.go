package llm

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/hybridgroup/yzma/pkg/llama"
)

// LibraryVersion is the llama.cpp release this package is written for: its
// prebuilt libraries are those of the npm package @node-llama-cpp/linux-x64
// (or linux-arm64) at version 3.22.1, which `make llama` installs.
const LibraryVersion = "v0.5.0"

// LibraryEnv names the environment variable holding the directory of the
// llama.cpp libraries, when [Options.Library] is not set.
const LibraryEnv = "MEMLOAD_LLAMA_LIB"

// ErrLibrary is matched by the error of [Load] when the llama.cpp libraries
// are missing, of another release or for another architecture.
var ErrLibrary = errors.New("llm: llama.cpp libraries unusable")

// fixLibrary is the advice every library error ends with.
const fixLibrary = `run "make llama" in the memload repository (it installs them into .bin/llama/), ` +
	`or put llama.cpp ` + LibraryVersion + `'s libllama.so, libggml.so, libggml-base.so and libggml-cpu-*.so into one directory ` +
	`and name it in Options.Library or $` + LibraryEnv + `, or ship them in lib/ beside the executable`

// library is llama.cpp as loaded into this process: once, from one
// directory, for every Model.
type library struct {
	dir     string
	variant string // the CPU backend ggml chose, such as "haswell"
	info    string // llama_print_system_info
}

var lib struct {
	sync.Mutex
	loaded *library
}

// libraryDir returns the directory to load llama.cpp from: dir if set, else
// $MEMLOAD_LLAMA_LIB, else lib/ beside the executable.
func libraryDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	if dir = os.Getenv(LibraryEnv); dir != "" {
		return dir, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("%w: Options.Library and $%s are not set, and the executable's directory is unknown (%v); %s",
			ErrLibrary, LibraryEnv, err, fixLibrary)
	}
	dir = filepath.Join(filepath.Dir(exe), "lib")
	if _, err := os.Stat(filepath.Join(dir, "libllama.so")); err != nil {
		return "", fmt.Errorf("%w: Options.Library and $%s are not set, and %s is missing; %s",
			ErrLibrary, LibraryEnv, filepath.Join(dir, "libllama.so"), fixLibrary)
	}
	return dir, nil
}

// openLibrary loads llama.cpp from dir (see libraryDir) unless it is loaded
// already, and returns it.
func openLibrary(dir string) (*library, error) {
	dir, err := libraryDir(dir)
	if err != nil {
		return nil, err
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	lib.Lock()
	defer lib.Unlock()
	if l := lib.loaded; l != nil {
		if !sameDir(l.dir, dir) {
			if err := checkLibrary(dir); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%w: llama.cpp is loaded from %s already, and a process holds one: cannot load it from %s too",
				ErrLibrary, l.dir, dir)
		}
		return l, nil
	}
	if err := checkLibrary(dir); err != nil {
		return nil, err
	}
	if err := llama.Load(dir); err != nil {
		return nil, fmt.Errorf("%w: %s: %v; %s", ErrLibrary, dir, err, fixLibrary)
	}
	llama.LogSet(logCallback())
	llama.BackendInit()
	if err := llama.GGMLBackendLoadAllFromPath(dir); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrLibrary, dir, err)
	}
	l := &library{dir: dir, variant: cpuVariant()}
	if l.variant == "" || llama.GGMLBackendDeviceCount() == 0 {
		return nil, fmt.Errorf("%w: no libggml-cpu-*.so in %s runs on this CPU (set Options.Logger to see why); %s",
			ErrLibrary, dir, fixLibrary)
	}
	l.info = strings.TrimSpace(llama.PrintSystemInfo())
	lib.loaded = l
	return l, nil
}

func sameDir(a, b string) bool {
	if a == b {
		return true
	}
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

var versionedSoname = regexp.MustCompile(`^libllama\.(v[0-9][^/]*)\.so$`)

// checkLibrary checks, before anything is loaded, that dir holds the
// libraries for this architecture and release: a dlopen of the wrong ones
// fails obscurely or, with the wrong struct layouts, crashes.
func checkLibrary(dir string) error {
	for _, name := range []string{"libllama.so", "libggml.so", "libggml-base.so"} {
		path := filepath.Join(dir, name)
		f, err := elf.Open(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%w: %s is missing; %s", ErrLibrary, path, fixLibrary)
			}
			return fmt.Errorf("%w: %s is not a shared library (%v); %s", ErrLibrary, path, err, fixLibrary)
		}
		machine, sonames := f.Machine, []string(nil)
		if name == "libllama.so" {
			sonames, _ = f.DynString(elf.DT_SONAME)
		}
		f.Close()
		if want, ok := elfMachine[runtime.GOARCH]; ok && machine != want {
			return fmt.Errorf("%w: %s is for %v, this program for %s (%v); %s",
				ErrLibrary, path, machine, runtime.GOARCH, want, fixLibrary)
		}
		for _, s := range sonames {
			if m := versionedSoname.FindStringSubmatch(s); m != nil && m[1] != LibraryVersion {
				return fmt.Errorf("%w: %s is llama.cpp %s, this package needs %s; %s",
					ErrLibrary, path, m[1], LibraryVersion, fixLibrary)
			}
		}
	}
	variants, _ := filepath.Glob(filepath.Join(dir, "libggml-cpu-*.so"))
	if len(variants) == 0 {
		return fmt.Errorf("%w: %s holds no CPU backend (libggml-cpu-*.so); %s", ErrLibrary, dir, fixLibrary)
	}
	return nil
}

// cpuVariant returns the CPU backend ggml loaded, from the libraries mapped
// into this process: ggml scores every libggml-cpu-*.so in the directory
// and keeps the best one this CPU can run.
func cpuVariant() string {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if i := strings.LastIndex(line, "/libggml-cpu-"); i >= 0 && strings.HasSuffix(line, ".so") {
			return strings.TrimSuffix(line[i+len("/libggml-cpu-"):], ".so")
		}
	}
	return ""
}

// SystemInfo describes the llama.cpp in use: its release, the CPU variant
// ggml picked for this machine at run time (such as "sapphirerapids" or
// "haswell"), the directory it came from and llama.cpp's own list of CPU
// features. It loads the libraries as [Load] does, from $MEMLOAD_LLAMA_LIB
// or lib/ beside the executable, unless a Model is loaded; if that fails, it
// returns the error's text.
func SystemInfo() string {
	l, err := openLibrary("")
	if err != nil {
		return err.Error()
	}
	return l.String()
}

// CheckLibrary loads llama.cpp's libraries as [Load] would with the
// options optFns set ([Options.Library], else $MEMLOAD_LLAMA_LIB, else lib/
// beside the executable), and returns an error matching [ErrLibrary] if
// they are missing, of another release or for another architecture. Call
// it before a long download: a library that is not there does not come
// with the model, and the error then comes at once, not after it.
func CheckLibrary(optFns ...func(*Options)) error {
	_, err := openLibrary(options(optFns).Library)
	return err
}

func (l *library) String() string {
	return fmt.Sprintf("llama.cpp %s, CPU variant %s (%s): %s", LibraryVersion, l.variant, l.dir, l.info)
}

// goString copies the NUL-terminated C string at p.
func goString(p uintptr) string {
	if p == 0 {
		return ""
	}
	b := *(**byte)(unsafe.Pointer(&p))
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(b), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(b, n))
}

// aborts holds the abort flag of each llama.cpp context, by the id passed
// to llama.cpp as the abort callback's data: no Go pointer crosses over.
var aborts sync.Map // uintptr -> *atomic.Bool

var abortIDs atomic.Uintptr

// abortCallback is llama.cpp's ggml_abort_callback, polled between graph
// nodes: one for the process, finding the flag by its data.
var abortCallback = sync.OnceValue(func() uintptr {
	return purego.NewCallback(func(id uintptr) uintptr {
		if f, ok := aborts.Load(id); ok && f.(*atomic.Bool).Load() {
			return 1
		}
		return 0
	})
})
