package main

import (
	"testing"
	"time"
)

// A provisioned-concurrency environment may take up to the function's
// timeout for its init, and should: its users never wait for the load.
// On-demand environments keep the budget that fits in Lambda's 10 s init.
func TestInitWait(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want time.Duration
	}{
		{"on demand", map[string]string{"AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand"}, 8 * time.Second},
		{"unset", map[string]string{}, 8 * time.Second},
		{"provisioned", map[string]string{"AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency"}, 15 * time.Minute},
		{"provisioned, set", map[string]string{"AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency", "INIT_WAIT": "30s"}, 30 * time.Second},
		{"on demand, set", map[string]string{"INIT_WAIT": "2s"}, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.env["MODEL_URI"] = "m.gguf"
			cfg, err := configFromEnv(func(k string) string { return tc.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if cfg.InitWait != tc.want {
				t.Errorf("InitWait = %v, want %v", cfg.InitWait, tc.want)
			}
		})
	}
}
