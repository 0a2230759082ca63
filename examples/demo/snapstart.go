package main

// -snapstart: the chatbot's SnapStart lifecycle, locally. The chatbot runs
// as a SnapStart function under lambdart (the stand-in for Lambda's
// Runtime API that the tests use): its init loads the whole model and
// calls restore/next, where Lambda would snapshot the microVM and lambdart
// freezes the process instead; the first request then restores it and is
// answered from the model the init loaded. Nothing here takes a real
// snapshot: the restore shown is the process thawed, not Lambda's, whose
// time for this model AWS measured at 1.39 s (in Python).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/memload/memload/internal/testutil"
	"github.com/memload/memload/internal/testutil/lambdart"
	"github.com/memload/memload/llm"
)

// snapStartRun is what -snapstart needs from the rest of the demo.
type snapStartRun struct {
	chatbot  string // the bootstrap to run
	minio    *testutil.MinIO
	endpoint string // MinIO's, or a shaped link's in front of it
	uri, sum string // the model
	ask      string
	tokens   int
	exit     bool
	out      io.Writer // the demo's lines; the function's logs go there too, indented
}

// snapStart runs the chatbot through SnapStart's lifecycle and reports
// each step: init, the snapshot point, the restore, the first answer.
func snapStart(ctx context.Context, r snapStartRun) error {
	env := map[string]string{
		"MODEL_URI": r.uri, "MODEL_SHA256": r.sum,
		"AWS_ENDPOINT_URL_S3": r.endpoint, "AWS_EC2_METADATA_DISABLED": "true",
	}
	if dir := os.Getenv(llm.LibraryEnv); dir != "" {
		env[llm.LibraryEnv] = dir // .bin/chatbot has no lib/ beside it
	}
	start := time.Now()
	fmt.Fprintf(r.out, "\nSnapStart under lambdart (a stand-in for Lambda: the snapshot is the frozen process):\n")
	fmt.Fprintf(r.out, "  %6.2f s  init (AWS_LAMBDA_INITIALIZATION_TYPE=snap-start): the whole model, then a warm-up token\n", 0.0)
	f, err := lambdart.Start(r.chatbot, func(o *lambdart.Options) {
		o.Env, o.SnapStart, o.Timeout, o.MemoryMB = env, true, 15*time.Minute, 10240
		// The role's credentials, from the container credentials endpoint
		// as under SnapStart.
		o.Credentials = &lambdart.Credentials{AccessKeyID: r.minio.AccessKey, SecretAccessKey: r.minio.SecretKey}
		o.Output = &indent{w: r.out, prefix: "  function | "}
	})
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Snapshot(15 * time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(r.out, "  %6.2f s  snapshot point: the function called restore/next; Lambda would snapshot it here (model included)\n", time.Since(start).Seconds())
	time.Sleep(500 * time.Millisecond) // frozen: nothing runs until a request comes
	fmt.Fprintf(r.out, "  %6.2f s  a request comes: restore (after-restore hooks), then the answer, with no download\n", time.Since(start).Seconds())
	if r.ask != "" {
		if err := askOnce(ctx, f.URL(), r.ask, r.tokens); err != nil {
			return err
		}
	}
	for _, rep := range f.Reports() {
		if rep.Phase == "restore" {
			fmt.Fprintf(r.out, "\nrestore phase: %.0f ms here (a thawed process; Lambda's restore of this model measured 1.39 s in AWS's write-up)\n",
				float64(rep.Duration.Microseconds())/1000)
		}
	}
	if r.exit {
		return nil
	}
	fmt.Fprintf(r.out, "\nthe restored function's URL (a Function URL stand-in): %s\nCtrl-C stops it and MinIO.\n", f.URL())
	<-ctx.Done()
	return nil
}

// indent writes each line of the function's output with a prefix.
type indent struct {
	w      io.Writer
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (i *indent) Write(p []byte) (int, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.buf = append(i.buf, p...)
	for {
		n := bytes.IndexByte(i.buf, '\n')
		if n < 0 {
			return len(p), nil
		}
		io.WriteString(i.w, i.prefix+strings.TrimRight(string(i.buf[:n]), "\r")+"\n")
		i.buf = i.buf[n+1:]
	}
}
