package main

import (
	"strings"
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

// REPACK chooses between faster prompts (repacked weights, the default)
// and a load during the download; anything but a boolean is refused.
func TestRepackSetting(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  bool
		err   bool
	}{{"", true, false}, {"true", true, false}, {"false", false, false}, {"0", false, false}, {"off", false, true}} {
		env := map[string]string{"MODEL_URI": "m.gguf", "REPACK": tc.value}
		cfg, err := configFromEnv(func(k string) string { return env[k] })
		switch {
		case tc.err && (err == nil || !strings.Contains(err.Error(), "REPACK=")):
			t.Errorf("REPACK=%q: error %v, want one naming REPACK", tc.value, err)
		case !tc.err && err != nil:
			t.Errorf("REPACK=%q: %v", tc.value, err)
		case !tc.err && cfg.Repack != tc.want:
			t.Errorf("REPACK=%q: Repack %v, want %v", tc.value, cfg.Repack, tc.want)
		}
	}
}
