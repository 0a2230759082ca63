package llm_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/llm"
	"github.com/memload/memload/memfd"
)

// tinyModel writes a tiny random-weight model with a ChatML template and
// returns its path. A real program loads a downloaded model instead; this
// one babbles, but llama.cpp runs it like any other.
func tinyModel() (path string, cleanup func()) {
	dir, err := os.MkdirTemp("", "llm-example")
	if err != nil {
		log.Fatal(err)
	}
	path = filepath.Join(dir, "tiny.gguf")
	if err := testutil.WriteModel(path, testutil.TinyConfig("qwen2")); err != nil {
		log.Fatal(err)
	}
	return path, func() { os.RemoveAll(dir) }
}

func Example() {
	path, cleanup := tinyModel()
	defer cleanup()

	ctx := context.Background()
	m, err := llm.Load(ctx, path, func(o *llm.Options) { o.Threads = 1 })
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	var answer strings.Builder
	st, err := m.Chat(ctx, []llm.Message{
		{Role: llm.RoleSystem, Content: "You are a helpful assistant."},
		{Role: llm.RoleUser, Content: "Where do you live?"},
	}, func(piece string) error {
		answer.WriteString(piece) // or stream it to the user
		return nil
	}, func(o *llm.ChatOptions) {
		o.MaxTokens = 8
		o.Temperature = 0 // greedy: the same answer every time
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("template %s, %d prompt tokens, %d generated, finish: %s\n",
		m.Template(), st.PromptTokens, st.GeneratedTokens, st.FinishReason)
	// Output: template chatml, 50 prompt tokens, 8 generated, finish: length
}

// ExampleLoadFile loads a model from a memory file, as one downloaded with
// s3load is. llama.cpp maps the memfd and computes from its pages; with
// CloseFile the descriptor is closed after the load, and the memory is
// released by Close.
func ExampleLoadFile() {
	path, cleanup := tinyModel()
	defer cleanup()

	src, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		log.Fatal(err)
	}
	f, err := memfd.New("tiny.gguf", fi.Size())
	if err != nil {
		log.Fatal(err)
	}
	if _, err := io.Copy(io.NewOffsetWriter(f, 0), src); err != nil {
		log.Fatal(err)
	}

	m, err := llm.LoadFile(context.Background(), f, func(o *llm.Options) {
		o.CloseFile = true
		o.Threads = 1
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	fmt.Println("loaded; template:", m.Template())
	// Output: loaded; template: chatml
}

// ExampleEarlyLoad loads a model while its memfd is written, as s3load
// writes a download: pass Written as s3load.Options.OnPrefix,
//
//	e := llm.NewEarlyLoad(ctx)
//	f, _, err := s3load.New(client, func(o *s3load.Options) {
//		o.SHA256 = sum // verified before Load returns
//		o.NoSeal = true // pages of repacked tensors are given back
//		o.OnPrefix = e.Written
//	}).Load(ctx, uri)
//	m, err := e.Finish(f, err)
//
// llama.cpp's load starts on the GGUF header; repacking, it waits at each
// tensor it repacks until the tensor is written, so the model is ready a
// moment after the last byte. Finish hands it out once every byte is in.
// A writer that reads back nothing it wrote (no SHA256) also calls
// Verified with each Written, so that the pages of repacked tensors go at
// once rather than at Finish. Here the file is written in two halves.
func ExampleEarlyLoad() {
	path, cleanup := tinyModel()
	defer cleanup()
	data, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	e := llm.NewEarlyLoad(ctx, func(o *llm.Options) { o.Threads = 1 })
	f, err := memfd.New("tiny.gguf", int64(len(data)))
	if err != nil {
		log.Fatal(err)
	}
	half := len(data) / 2
	for _, part := range [][2]int{{0, half}, {half, len(data)}} {
		if _, err := f.WriteAt(data[part[0]:part[1]], int64(part[0])); err != nil {
			log.Fatal(err)
		}
		e.Written(f, int64(part[1])) // the load starts on the first half
		e.Verified(int64(part[1]))   // nothing is read back
	}
	m, err := e.Finish(f, nil) // f is closed: the model keeps its pages
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	st := e.Stats()
	fmt.Println("loaded as it was written:", st.Early, st.Fallback == "")
	// Output: loaded as it was written: true true
}

// ExampleModel_Chat_stop ends an answer at a stop string. Text that could be
// the start of a stop string is held back until it is known not to be, so
// the stop string never reaches the callback, even in part.
func ExampleModel_Chat_stop() {
	path, cleanup := tinyModel()
	defer cleanup()
	m, err := llm.Load(context.Background(), path, func(o *llm.Options) { o.Threads = 1 })
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	stops := []string{"\n\n", "User:", "e"}
	var answer strings.Builder
	_, err = m.Chat(context.Background(), []llm.Message{{Role: llm.RoleUser, Content: "Count to ten."}},
		func(piece string) error {
			answer.WriteString(piece) // a real program prints the piece
			return nil
		},
		func(o *llm.ChatOptions) {
			o.MaxTokens = 64
			o.Stop = stops
		})
	if err != nil {
		log.Fatal(err)
	}
	found := false
	for _, s := range stops {
		found = found || strings.Contains(answer.String(), s)
	}
	fmt.Println("stop strings in the answer:", found)
	// Output: stop strings in the answer: false
}

// The JSON grammar constrains the answer to a JSON object; a bias and
// penalties steer what is sampled.
func ExampleChatOptions_grammar() {
	path, cleanup := tinyModel()
	defer cleanup()

	ctx := context.Background()
	m, err := llm.Load(ctx, path, func(o *llm.Options) { o.Threads = 1 })
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	var answer strings.Builder
	_, err = m.Chat(ctx, []llm.Message{{Role: llm.RoleUser, Content: "Describe yourself in JSON."}},
		func(piece string) error { answer.WriteString(piece); return nil },
		func(o *llm.ChatOptions) {
			o.MaxTokens, o.Temperature = 16, 0
			o.Grammar = llm.JSONGrammar
			o.FrequencyPenalty = 0.5               // over the last llm.PenaltyLastN tokens
			o.LogitBias = map[int]float32{0: -100} // token 0 never
		})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.HasPrefix(answer.String(), "{"))
	// Output: true
}

// A writer that writes a model out of order, as s3load does when it
// fetches the tensors in the order llama.cpp loads them
// (s3load.Options.Order), tells of each piece with WrittenRange
// (s3load.Options.OnPart): llama.cpp then waits at a repacked tensor only
// for its own bytes. Written still tells of the prefix in place, which
// starts the load on the header. Here the second half comes first.
func ExampleEarlyLoad_WrittenRange() {
	path, cleanup := tinyModel()
	defer cleanup()
	data, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}

	e := llm.NewEarlyLoad(context.Background(), func(o *llm.Options) { o.Threads = 1 })
	f, err := memfd.New("tiny.gguf", int64(len(data)))
	if err != nil {
		log.Fatal(err)
	}
	half := len(data) / 2
	if _, err := f.WriteAt(data[half:], int64(half)); err != nil {
		log.Fatal(err)
	}
	e.WrittenRange(f, int64(half), int64(len(data)))
	if _, err := f.WriteAt(data[:half], 0); err != nil {
		log.Fatal(err)
	}
	e.Written(f, int64(len(data))) // with the first half, all of it
	m, err := e.Finish(f, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	fmt.Println("loaded as it was written:", e.Stats().Early)
	// Output: loaded as it was written: true
}

// A program that downloads a model first checks that llama.cpp's libraries
// are there: they do not come with the model.
func ExampleCheckLibrary() {
	if err := llm.CheckLibrary(); err != nil {
		log.Fatal(err) // names the missing file and how to install it
	}
	fmt.Println("llama.cpp", llm.LibraryVersion, "is ready")
	// Output: llama.cpp v0.5.0 is ready
}
