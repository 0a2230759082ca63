package testutil

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/crc64nvme"
)

// HostileS3 is an S3-compatible server on 127.0.0.1, for path-style
// clients, that serves objects from memory and answers each GetObject and
// HeadObject as its Answer function says: S3's answer, or one with another
// status, other headers, a body from the wrong offset, cut short, late or
// trickled. It stands in for the broken S3 clones, proxies and gateways a
// loader meets in the field, which cannot be run here. Requests are not
// authenticated.
type HostileS3 struct {
	URL string

	answer   func(*http.Request) Answer
	srv      *http.Server
	stop     chan struct{}
	handlers handlerGroup

	mu      sync.Mutex
	objects map[string]hostileObject // by path, /bucket/key
}

type hostileObject struct {
	data    []byte
	etag    string
	crc64   string // CRC64NVME in base64, as S3 sends it
	headers http.Header
}

// Answer says how a HostileS3 answers one request. The zero Answer is what
// S3 answers.
type Answer struct {
	// Status replaces S3's status (206, 200, 416 or 404). A 3xx or an
	// error status comes with an S3 error body unless the status is for
	// a HEAD.
	Status int
	// Header is applied after S3's headers: each value replaces S3's, and
	// an empty value removes the header.
	Header map[string]string
	// Shift moves the body's first byte this far from where the range
	// (or Status) says it starts, within the object.
	Shift int64
	// BodyLen, when positive, cuts the body after this many bytes, then
	// the connection is closed (Hang holds it instead); Content-Length
	// still says the full length unless Header sets it.
	BodyLen int64
	// Hang holds the connection open without sending more, after BodyLen
	// bytes, until the client gives up or the server closes.
	Hang bool
	// Delay is waited before the headers are sent.
	Delay time.Duration
	// Trickle, with TrickleBytes, sends the body TrickleBytes at a time
	// with a wait of Trickle between writes.
	Trickle      time.Duration
	TrickleBytes int
}

// NewHostileS3 starts a server that asks answer how to answer each request
// (nil: always as S3 does), and closes it when the test ends.
func NewHostileS3(tb testing.TB, answer func(*http.Request) Answer) *HostileS3 {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if answer == nil {
		answer = func(*http.Request) Answer { return Answer{} }
	}
	s := &HostileS3{
		URL:     "http://" + ln.Addr().String(),
		answer:  answer,
		stop:    make(chan struct{}),
		objects: map[string]hostileObject{},
	}
	s.srv = &http.Server{Handler: s, ErrorLog: log.New(io.Discard, "", 0)}
	go s.srv.Serve(ln)
	tb.Cleanup(s.Close)
	return s
}

// Put stores data as bucket/key, with an ETag (its MD5) and a full-object
// CRC64NVME, as S3 computes them. headers are added to every answer about
// the object (e.g. x-amz-version-id).
func (s *HostileS3) Put(bucket, key string, data []byte, headers ...string) {
	sum := md5.Sum(data)
	crc := binary.BigEndian.AppendUint64(nil, crc64nvme.Checksum(data))
	h := http.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Set(headers[i], headers[i+1])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects["/"+bucket+"/"+key] = hostileObject{
		data: bytes.Clone(data), etag: `"` + hex.EncodeToString(sum[:]) + `"`,
		crc64: base64.StdEncoding.EncodeToString(crc), headers: h,
	}
}

// ETag returns the ETag S3 would give bucket/key.
func (s *HostileS3) ETag(bucket, key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objects["/"+bucket+"/"+key].etag
}

// Close stops the server, ending hung answers, and returns once every
// handler has returned.
func (s *HostileS3) Close() {
	s.handlers.close(func() {
		close(s.stop)
		s.srv.Close()
	})
}

func (s *HostileS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.handlers.enter() {
		http.Error(w, "server closed", http.StatusServiceUnavailable)
		return
	}
	defer s.handlers.leave()
	io.Copy(io.Discard, r.Body)
	a := s.answer(r)
	if !s.wait(r, a.Delay) {
		return
	}
	s.mu.Lock()
	obj, found := s.objects[r.URL.Path]
	s.mu.Unlock()

	// S3's answer.
	status, start, end := http.StatusOK, int64(0), int64(len(obj.data))-1
	h := w.Header()
	switch {
	case !found:
		status = http.StatusNotFound
	case r.Header.Get("If-Match") != "" && r.Header.Get("If-Match") != obj.etag:
		status = http.StatusPreconditionFailed
	case r.Method == http.MethodGet && r.Header.Get("Range") != "":
		if a, b, ok := parseRange(r.Header.Get("Range"), int64(len(obj.data))); ok {
			status, start, end = http.StatusPartialContent, a, b
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(obj.data)))
		} else {
			status = http.StatusRequestedRangeNotSatisfiable
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", len(obj.data)))
		}
	}
	if found {
		h.Set("ETag", obj.etag)
		h.Set("Accept-Ranges", "bytes")
		for k, v := range obj.headers {
			h[k] = v
		}
		if r.Method == http.MethodHead && r.Header.Get("X-Amz-Checksum-Mode") == "ENABLED" {
			h.Set("X-Amz-Checksum-Crc64nvme", obj.crc64)
			h.Set("X-Amz-Checksum-Type", "FULL_OBJECT")
		}
	}
	if a.Status != 0 {
		status = a.Status
	}
	var body []byte
	switch {
	case status < 300 && r.Method == http.MethodHead:
		h.Set("Content-Length", strconv.Itoa(len(obj.data)))
	case status < 300:
		from := min(max(start+a.Shift, 0), int64(len(obj.data)))
		to := min(max(end+1+a.Shift, from), int64(len(obj.data)))
		body = obj.data[from:to]
		h.Set("Content-Length", strconv.Itoa(int(end-start+1)))
	case r.Method != http.MethodHead:
		body = s3ErrorBody(status, r.URL.Path)
		h.Set("Content-Type", "application/xml")
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	for k, v := range a.Header {
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
	}
	if n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err != nil || n < 0 {
		h.Del("Content-Length")
	} else if n < int64(len(body)) {
		body = body[:n] // net/http refuses to send more
	}
	if a.BodyLen > 0 && a.BodyLen < int64(len(body)) {
		body = body[:a.BodyLen]
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	for len(body) > 0 {
		n := len(body)
		if a.Trickle > 0 && a.TrickleBytes > 0 {
			n = min(n, a.TrickleBytes)
		}
		if _, err := w.Write(body[:n]); err != nil {
			return
		}
		body = body[n:]
		if a.Trickle > 0 && a.TrickleBytes > 0 {
			http.NewResponseController(w).Flush()
			if !s.wait(r, a.Trickle) {
				return
			}
		}
	}
	if a.Hang {
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-s.stop:
		case <-time.After(time.Minute):
		}
	}
}

// wait waits d, and reports false if the client or the server went away
// meanwhile.
func (s *HostileS3) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	return waitFor(r, s.stop, d)
}

// parseRange parses "bytes=A-B" against an object of size bytes, as S3
// does: B past the end is cut to the end; A past the end is unsatisfiable.
func parseRange(s string, size int64) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(s, "bytes=")
	a, b, found2 := strings.Cut(spec, "-")
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if !found || !found2 || err1 != nil || err2 != nil || start < 0 || end < start || start >= size {
		return 0, 0, false
	}
	return start, min(end, size-1), true
}

func s3ErrorBody(status int, path string) []byte {
	code := map[int]string{
		301: "PermanentRedirect", 307: "TemporaryRedirect", 400: "InvalidRequest", 403: "AccessDenied",
		404: "NoSuchKey", 412: "PreconditionFailed", 416: "InvalidRange", 500: "InternalError", 503: "SlowDown",
	}[status]
	if code == "" {
		code = http.StatusText(status)
	}
	return []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>hostile %d</Message><Resource>%s</Resource><RequestId>hostile</RequestId></Error>`,
		code, status, path))
}
