//go:build !llm21

package main

import "testing"

// toolServer is nil until issue 21's llm (tools, llm/jsonschema) is
// merged: the recordings of tool and structured-output flows are skipped.
func toolServer(*testing.T) *testServer { return nil }
