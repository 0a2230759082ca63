package main

// The SnapStart path (template-image.yaml: a container image, published
// versions snapshotted): the init loads the whole model and warms it up,
// so that the snapshot holds it ready; each environment restored from the
// snapshot then answers its first request with no download and no
// llama.cpp load. What a restore must renew, and why the rest needs
// nothing:
//   - sampling seeds: llm draws its default seed from crypto/rand, which
//     the kernel keeps unique after a restore (math/rand/v2's state would
//     be the snapshot's, the same in every environment);
//   - ids (chatcmpl-…): rand.Text, crypto/rand too;
//   - AWS credentials and clients: the load's S3 client is not kept; the
//     API key is read again with a configuration loaded after the restore,
//     whose credentials come from the container credentials endpoint;
//   - connections: the AWS clients' idle ones are closed before the
//     snapshot (they would be dead after it);
//   - the API key: dropped before the snapshot, read again after the
//     restore (it may have rotated since the snapshot); if it cannot be
//     read, the restore fails and the environment never serves.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/memload/memload/llm"
	"github.com/memload/memload/snapstart"
)

// snapStart ends a SnapStart init: it waits for the whole model (the init
// may last up to 15 minutes here, the limit being Lambda's to enforce),
// warms it up and runs the snapshot lifecycle. awsHTTP is the AWS clients'
// HTTP client. On a nil error the environment has been restored and may
// serve.
func snapStart(ctx context.Context, cfg config, l *loader, srv *server, awsHTTP *http.Client, logger *slog.Logger) error {
	select {
	case <-l.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if l.err != nil {
		return fmt.Errorf("loading %s: %w", cfg.ModelURI, l.err) // the init fails: no snapshot
	}
	l.cold.LoadedInit = true
	if err := warmUp(ctx, l.model, logger); err != nil {
		return err
	}

	hooks := snapstart.Hooks{Logger: logger}
	hooks.BeforeSnapshot(func(context.Context) error {
		awsHTTP.CloseIdleConnections()
		return nil
	})
	if srv.apiKey != "" {
		hooks.BeforeSnapshot(func(context.Context) error {
			srv.apiKey = ""
			return nil
		})
		hooks.AfterRestore(func(ctx context.Context) error {
			kctx, cancel := context.WithTimeout(ctx, 5*time.Second) // of the restore phase's 10 s
			defer cancel()
			key, err := fetchAPIKey(kctx, cfg)
			if err != nil {
				return err
			}
			srv.apiKey = key
			return nil
		})
	}
	return hooks.Checkpoint(ctx)
}

// warmUp generates one token, so that every page a generation touches
// (the weights, the compute buffers, llama.cpp's threads) is resident when
// the snapshot is taken.
func warmUp(ctx context.Context, m *llm.Model, logger *slog.Logger) error {
	start := time.Now()
	_, err := m.Chat(ctx, []llm.Message{{Role: llm.RoleUser, Content: "Hello"}}, func(string) error { return nil },
		func(o *llm.ChatOptions) { o.MaxTokens, o.Temperature = 1, 0 })
	if err != nil {
		return fmt.Errorf("warming the model up: %w", err)
	}
	logger.Info("warmed up: one token generated before the snapshot", "ms", float64(time.Since(start).Microseconds())/1000)
	return nil
}
