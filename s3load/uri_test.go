package s3load

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		uri     string
		want    Object
		wantErr string
	}{
		{"s3://models/deepseek/r1.gguf", Object{"models", "deepseek/r1.gguf"}, ""},
		{"s3://My_Old.Bucket-1/k", Object{"My_Old.Bucket-1", "k"}, ""},
		{"s3://b/k", Object{}, "3 to 63"},
		{"s3://models/a b?c=d#e", Object{"models", "a b?c=d#e"}, ""},
		{"S3://models/k", Object{}, "does not start with s3://"},
		{"models/k", Object{}, "does not start with s3://"},
		{"", Object{}, "does not start with s3://"},
		{"s3://", Object{}, "no bucket"},
		{"s3://models", Object{}, "no key"},
		{"s3://models/", Object{}, "no key"},
		{"s3://models/dir/", Object{}, "prefix"},
		{"s3://mod els/k", Object{}, "bucket names hold only"},
		{"s3://models/" + strings.Repeat("k", 1025), Object{}, "at most 1024"},
		{"s3://models/\xff", Object{}, "UTF-8"},
	}
	for _, tt := range tests {
		got, err := ParseURI(tt.uri)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseURI(%q) err = %v, want one mentioning %q", tt.uri, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseURI(%q) = %+v, %v; want %+v", tt.uri, got, err, tt.want)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"s3://models/r1.gguf", "s3://a/", "s3:///k", "s3://bucket/dir/", "s3://b\x00b/k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		obj, err := ParseURI(uri)
		if err != nil {
			return
		}
		// What parses must name a real-looking object and print back as given.
		if obj.String() != uri {
			t.Errorf("ParseURI(%q).String() = %q", uri, obj.String())
		}
		if obj.Bucket == "" || obj.Key == "" || strings.Contains(obj.Bucket, "/") {
			t.Errorf("ParseURI(%q) = %+v", uri, obj)
		}
		if _, err := ParseURI(obj.String()); err != nil {
			t.Errorf("round trip of %q: %v", uri, err)
		}
	})
}
