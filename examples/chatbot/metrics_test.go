package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"testing"
	"time"
)

// emfUnits are the units CloudWatch's Embedded Metric Format accepts.
var emfUnits = []string{"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
	"Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
	"Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
	"Gigabits/Second", "Terabits/Second", "Count/Second", "None"}

// checkEMF checks one log line against the Embedded Metric Format
// specification (CloudWatch User Guide, "Specification: Embedded metric
// format"), and returns its metric values by name.
func checkEMF(line []byte) (map[string]float64, map[string]any, error) {
	var root map[string]any
	if err := json.Unmarshal(line, &root); err != nil {
		return nil, nil, fmt.Errorf("not a JSON object: %v", err)
	}
	aws, ok := root["_aws"].(map[string]any)
	if !ok {
		return nil, nil, fmt.Errorf("no _aws object")
	}
	ts, ok := aws["Timestamp"].(float64)
	if !ok || ts != math.Trunc(ts) || math.Abs(ts-float64(time.Now().UnixMilli())) > float64(time.Hour.Milliseconds()) {
		return nil, nil, fmt.Errorf("_aws.Timestamp %v: want milliseconds since the epoch, now", aws["Timestamp"])
	}
	directives, ok := aws["CloudWatchMetrics"].([]any)
	if !ok || len(directives) == 0 {
		return nil, nil, fmt.Errorf("_aws.CloudWatchMetrics %v: want an array of metric directives", aws["CloudWatchMetrics"])
	}
	values := map[string]float64{}
	for i, d := range directives {
		dir, ok := d.(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("directive %d is not an object", i)
		}
		if ns, ok := dir["Namespace"].(string); !ok || len(ns) < 1 || len(ns) > 1024 {
			return nil, nil, fmt.Errorf("directive %d: Namespace %v: want a string of 1 to 1024 characters", i, dir["Namespace"])
		}
		sets, ok := dir["Dimensions"].([]any)
		if !ok {
			return nil, nil, fmt.Errorf("directive %d: Dimensions %v: want an array of dimension sets", i, dir["Dimensions"])
		}
		for _, s := range sets {
			set, ok := s.([]any)
			if !ok || len(set) > 30 {
				return nil, nil, fmt.Errorf("directive %d: dimension set %v: want an array of at most 30 names", i, s)
			}
			for _, name := range set {
				n, ok := name.(string)
				if !ok {
					return nil, nil, fmt.Errorf("dimension name %v is not a string", name)
				}
				if v, ok := root[n].(string); !ok || v == "" || len(v) > 1024 {
					return nil, nil, fmt.Errorf("dimension %s: root member %v: want a string of 1 to 1024 characters", n, root[n])
				}
			}
		}
		defs, ok := dir["Metrics"].([]any)
		if !ok || len(defs) == 0 || len(defs) > 100 {
			return nil, nil, fmt.Errorf("directive %d: Metrics: want 1 to 100 metric definitions, got %v", i, dir["Metrics"])
		}
		for _, m := range defs {
			def, ok := m.(map[string]any)
			if !ok {
				return nil, nil, fmt.Errorf("metric definition %v is not an object", m)
			}
			name, ok := def["Name"].(string)
			if !ok || name == "" || len(name) > 1024 {
				return nil, nil, fmt.Errorf("metric Name %v: want a string of 1 to 1024 characters", def["Name"])
			}
			if u, ok := def["Unit"]; ok && !slices.Contains(emfUnits, fmt.Sprint(u)) {
				return nil, nil, fmt.Errorf("metric %s: Unit %v is not one of CloudWatch's", name, u)
			}
			if r, ok := def["StorageResolution"]; ok && r != 1.0 && r != 60.0 {
				return nil, nil, fmt.Errorf("metric %s: StorageResolution %v: want 1 or 60", name, r)
			}
			v, ok := root[name].(float64)
			if !ok {
				return nil, nil, fmt.Errorf("metric %s: root member %v is not a number", name, root[name])
			}
			if _, dup := values[name]; dup {
				return nil, nil, fmt.Errorf("metric %s defined twice", name)
			}
			values[name] = v
		}
	}
	return values, root, nil
}

// emfLines returns the embedded-metric lines among JSON log lines.
func emfLines(t *testing.T, logs *logBuffer) []map[string]float64 {
	t.Helper()
	logs.mu.Lock()
	data := bytes.Clone(logs.buf.Bytes())
	logs.mu.Unlock()
	var out []map[string]float64
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), []byte(`"_aws"`)) {
			continue
		}
		values, root, err := checkEMF(sc.Bytes())
		if err != nil {
			t.Fatalf("%s\n%v", sc.Bytes(), err)
		}
		if root["FunctionName"] != "my-function" || root["Model"] != "tiny-qwen2.gguf" {
			t.Errorf("dimensions of %s", sc.Bytes())
		}
		values["Event:"+root["Event"].(string)] = 1
		out = append(out, values)
	}
	return out
}

func TestEMF(t *testing.T) {
	ts := newTestServer(t, testConfig(t, map[string]string{"AWS_LAMBDA_FUNCTION_NAME": "my-function", "METRICS_NAMESPACE": "test/chatbot"}))
	<-ts.load.done
	for _, stream := range []bool{false, true} {
		resp := post(t, context.Background(), ts.url, fmt.Sprintf(`{"stream":%v,"messages":[{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":5}`, stream))
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatal(resp.Status)
		}
	}
	lines := emfLines(t, ts.logs)
	if len(lines) != 3 || lines[0]["Event:cold_start"] != 1 || lines[1]["Event:answer"] != 1 || lines[2]["Event:answer"] != 1 {
		t.Fatalf("metric lines %v: want the cold start and two answers", lines)
	}
	cold := lines[0]
	for _, name := range []string{"ColdStart", "LlamaLoad", "Download", "DownloadThroughput", "LoadAttempts"} {
		if _, ok := cold[name]; !ok {
			t.Errorf("the cold start has no %s: %v", name, cold)
		}
	}
	if cold["ColdStart"] <= 0 || cold["LlamaLoad"] <= 0 || cold["LoadAttempts"] != 1 {
		t.Errorf("cold start %v", cold)
	}
	// A local file has no link and no last byte: no zeros to skew them
	// (TestLoadFromMinIO checks them for a load from S3).
	for _, name := range []string{"LinkThroughput", "ReadyAfterLastByte"} {
		if _, ok := cold[name]; ok {
			t.Errorf("a local file's cold start has %s: %v", name, cold)
		}
	}
	for _, a := range lines[1:] {
		if a["GeneratedTokens"] != 5 || a["PromptTokens"] < 1 || a["GenerationTokensPerSecond"] <= 0 || a["PromptTokensPerSecond"] <= 0 || a["TimeToFirstToken"] <= 0 {
			t.Errorf("answer metrics %v", a)
		}
	}
}

func TestCheckEMF(t *testing.T) {
	// The checker refuses what CloudWatch would drop.
	now := time.Now().UnixMilli()
	for _, bad := range []string{
		`{"a":1}`,
		fmt.Sprintf(`{"_aws":{"Timestamp":"%d","CloudWatchMetrics":[]}}`, now),
		fmt.Sprintf(`{"_aws":{"Timestamp":%d,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[["D"]],"Metrics":[{"Name":"M"}]}]},"M":1}`, now),
		fmt.Sprintf(`{"_aws":{"Timestamp":%d,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[[]],"Metrics":[{"Name":"M","Unit":"ms"}]}]},"M":1}`, now),
		fmt.Sprintf(`{"_aws":{"Timestamp":%d,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[[]],"Metrics":[{"Name":"M"}]}]},"M":"1"}`, now),
	} {
		if _, _, err := checkEMF([]byte(bad)); err == nil {
			t.Errorf("checkEMF accepted %s", bad)
		}
	}
	good := fmt.Sprintf(`{"_aws":{"Timestamp":%d,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[["D"]],"Metrics":[{"Name":"M","Unit":"Count"}]}]},"D":"x","M":1}`, now)
	if _, _, err := checkEMF([]byte(good)); err != nil {
		t.Errorf("checkEMF refused %s: %v", good, err)
	}
}
