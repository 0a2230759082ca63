// Command chatbot is a chat model served from AWS Lambda: at start it loads a
// GGUF model from S3 into memory (s3load → memfd → llm), then answers
// OpenAI-compatible chat requests, streamed through a Lambda Function URL.
//
// Under Lambda (AWS_LAMBDA_RUNTIME_API is set) it serves its handler with
// lambdaurl, for a Function URL in RESPONSE_STREAM mode. Under SnapStart
// (a container image, AWS_LAMBDA_INITIALIZATION_TYPE=snap-start) its init
// loads the whole model, and the snapshot holds it (snapstart.go).
// Anywhere else it listens on 127.0.0.1:8080:
//
//	MODEL_URI=s3://bucket/model.gguf chatbot [-addr 127.0.0.1:8080]
//
// Endpoints: POST /v1/chat/completions (OpenAI chat API, with "stream": true
// as server-sent events), GET /v1/models, GET / (a chat page), GET /healthz
// (load state and cold-start breakdown). With AUTH_TYPE=NONE, /v1/ wants an
// API key read at init from SSM or Secrets Manager. Configuration comes
// from the environment; see README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/lambdaurl"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/memload/memload/snapstart"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chatbot:", err)
		os.Exit(1)
	}
}

func run() error {
	onLambda := os.Getenv("AWS_LAMBDA_RUNTIME_API") != ""
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on when not under Lambda (port 0 picks a free one)")
	logJSON := flag.Bool("log-json", onLambda, "log JSON lines (default under Lambda) instead of text")
	verbose := flag.Bool("v", false, "debug logs, including llama.cpp's")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	hopts := &slog.HandlerOptions{Level: level}
	var logger *slog.Logger
	cfg, err := configFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	met := &metrics{namespace: cfg.MetricsNamespace, dims: map[string]string{"FunctionName": cfg.FunctionName, dimensionModel: cfg.ModelName}, now: time.Now}
	if *logJSON {
		// Under Lambda, stdout goes to CloudWatch Logs, which reads the
		// embedded-metric lines among the logs.
		out := &syncWriter{w: os.Stdout}
		logger = slog.New(slog.NewJSONHandler(out, hopts))
		met.w = out
	} else {
		logger = slog.New(slog.NewTextHandler(os.Stderr, hopts))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	snap := onLambda && snapstart.Enabled()
	var awsHTTP *http.Client
	if snap {
		// One HTTP client (the SDK's default transport) for the AWS
		// clients, whose idle connections are closed before the snapshot.
		awsHTTP = &http.Client{Transport: awshttp.NewBuildableClient().GetTransport()}
		cfg.awsOptions = append(cfg.awsOptions, awsconfig.WithHTTPClient(awsHTTP))
	}
	l := startLoad(ctx, cfg, logger, met)
	srv := newServer(cfg, l, logger)
	srv.metrics = met
	if cfg.AuthType == authNone {
		// While the model loads.
		kctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		srv.apiKey, err = fetchAPIKey(kctx, cfg)
		cancel()
		if err != nil {
			return err // never serve open by accident
		}
		logger.Info("API key read: /v1/ requires Authorization: Bearer", "parameter", cfg.APIKeyParameter, "secret", cfg.APIKeySecret)
	} else if cfg.APIKeyParameter != "" || cfg.APIKeySecret != "" {
		logger.Warn("API_KEY_PARAMETER and API_KEY_SECRET are ignored with AUTH_TYPE=AWS_IAM: the Function URL checks the callers")
	}

	if snap {
		// A SnapStart init (snapstart.go): the whole model, then the
		// snapshot; this returns in a restored environment.
		if err := snapStart(ctx, cfg, l, srv, awsHTTP, logger); err != nil {
			return err
		}
		lambdaurl.Start(srv) // does not return
		return nil
	}
	if onLambda {
		// Lambda's init phase lasts up to 10 s. Load within it when the
		// model allows; otherwise take the first request and let it wait.
		wait := time.NewTimer(max(0, cfg.InitWait-time.Since(processStart)))
		select {
		case <-l.done:
			if l.err != nil {
				// Fail the init: Lambda reports it and starts afresh.
				return fmt.Errorf("loading %s: %w", cfg.ModelURI, l.err)
			}
			l.cold.LoadedInit = true
		case <-wait.C:
			phase, loaded, total := l.state()
			logger.Warn("model still loading at the end of the init budget: the first request waits for it",
				"init_wait", cfg.InitWait, "phase", phase, "loaded_bytes", loaded, "total_bytes", total)
		}
		go exitWhenLoadFails(l, srv, logger, os.Exit)
		lambdaurl.Start(srv) // does not return
		return nil
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	logger.Info("listening", "url", "http://"+ln.Addr().String()+"/", "model", cfg.ModelURI)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err = <-served:
	case <-ctx.Done():
		logger.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = hs.Shutdown(sctx)
	}
	l.close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// exitWhenLoadFails ends the process once the model load has failed all
// its attempts: Lambda then starts a fresh environment for the next
// request, rather than this one answering 500 until Lambda recycles it. A
// request that waited for the model is answered first.
func exitWhenLoadFails(l *loader, s *server, logger *slog.Logger, exit func(int)) {
	<-l.done
	if l.err == nil {
		return
	}
	// Take the slot: the request that held it has written its error, and
	// no other starts.
	select {
	case s.slot <- struct{}{}:
	case <-time.After(5 * time.Second):
	}
	time.Sleep(exitGrace) // for the runtime to send that answer
	logger.Error("exiting: the model could not be loaded, so that Lambda starts a fresh environment",
		"attempts", l.cold.Attempts, "err", l.err)
	exit(1)
}

// exitGrace is how long exitWhenLoadFails lets the last answer travel.
var exitGrace = 500 * time.Millisecond
