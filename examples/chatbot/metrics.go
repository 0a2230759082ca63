package main

import (
	"encoding/json"
	"io"
	"math"
	"sync"
	"time"
)

// metrics writes CloudWatch Embedded Metric Format lines: JSON log lines
// that CloudWatch Logs turns into metrics, with no call to CloudWatch.
// https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
type metrics struct {
	w         io.Writer // nil: no metrics
	namespace string
	dims      map[string]string // the dimensions every metric has
	now       func() time.Time
}

// metric is one value, with a unit of the specification's list.
type metric struct {
	name  string
	unit  string
	value float64
}

// EMF units used here.
const (
	unitMS         = "Milliseconds"
	unitBytes      = "Bytes"
	unitBytesPerS  = "Bytes/Second"
	unitCount      = "Count"
	unitCountPerS  = "Count/Second"
	dimensionModel = "Model"
)

// put writes one line with these metrics and properties (strings or
// numbers that are not metrics, searchable in Logs Insights).
func (m *metrics) put(ms []metric, props map[string]any) {
	if m == nil || m.w == nil || len(ms) == 0 {
		return
	}
	type definition struct {
		Name string `json:"Name"`
		Unit string `json:"Unit"`
	}
	dimNames := make([]string, 0, len(m.dims))
	line := map[string]any{}
	for k, v := range props {
		line[k] = v
	}
	for _, k := range []string{"FunctionName", dimensionModel} { // a fixed order
		if v, ok := m.dims[k]; ok {
			dimNames = append(dimNames, k)
			line[k] = v
		}
	}
	defs := make([]definition, 0, len(ms))
	for _, x := range ms {
		defs = append(defs, definition{x.name, x.unit})
		if math.IsNaN(x.value) || math.IsInf(x.value, 0) {
			x.value = 0 // JSON has no NaN; a lost line would lose them all
		}
		line[x.name] = x.value
	}
	line["_aws"] = map[string]any{
		"Timestamp": m.now().UnixMilli(),
		"CloudWatchMetrics": []any{map[string]any{
			"Namespace":  m.namespace,
			"Dimensions": [][]string{dimNames},
			"Metrics":    defs,
		}},
	}
	b, err := json.Marshal(line)
	if err != nil {
		return
	}
	m.w.Write(append(b, '\n'))
}

// coldStartMetrics are the cold start's phases and speeds; the link's rate,
// the model's trail behind the last byte and the repack's gate only for a
// load from S3.
func coldStartMetrics(c coldStart) []metric {
	out := []metric{
		{"ProcessStart", unitMS, c.ProcessMS},
		{"Config", unitMS, c.ConfigMS},
		{"Download", unitMS, c.DownloadMS},
		{"Verify", unitMS, c.VerifyMS},
		{"LlamaLoad", unitMS, c.LlamaMS},
		{"ColdStart", unitMS, c.TotalMS},
		{"DownloadFirstByte", unitMS, c.FirstByte},
		{"DownloadThroughput", unitBytesPerS, c.MiBPerSec * (1 << 20)},
		{"ModelBytes", unitBytes, float64(c.Bytes)},
		{"DownloadRetries", unitCount, float64(c.Retries)},
		{"LoadAttempts", unitCount, float64(c.Attempts)},
	}
	if c.LinkMiBPerSec > 0 {
		out = append(out, metric{"LinkThroughput", unitBytesPerS, c.LinkMiBPerSec * (1 << 20)},
			metric{"ReadyAfterLastByte", unitMS, c.ReadyAfterLastByte})
		if c.Repack {
			// How long the repack waited for the link, and whether it
			// fell back to after the last byte: an alarm's signal.
			fallback := 0.0
			if c.Fallback != "" {
				fallback = 1
			}
			out = append(out, metric{"GateWaited", unitMS, c.GateWaitedMS}, metric{"RepackFallback", unitCount, fallback})
		}
	}
	return out
}

// syncWriter serialises writes, so that log and metric lines, each one
// Write, never interleave.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
