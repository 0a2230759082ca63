package s3load

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Object names an S3 object.
type Object struct {
	Bucket string
	Key    string
}

// String returns the object as s3://bucket/key.
func (o Object) String() string { return "s3://" + o.Bucket + "/" + o.Key }

// ParseURI parses s3://bucket/key. The key is taken as it is, without
// unescaping; it may contain slashes but must not be empty or end in one.
// Its errors match ErrInvalidInput.
func ParseURI(uri string) (Object, error) {
	rest, ok := strings.CutPrefix(uri, "s3://")
	if !ok {
		return Object{}, invalid("s3load: URI %q does not start with s3://: write it as s3://bucket/key", uri)
	}
	bucket, key, _ := strings.Cut(rest, "/")
	if err := checkBucket(bucket); err != nil {
		return Object{}, invalid("s3load: URI %q: %w", uri, err)
	}
	switch {
	case key == "":
		return Object{}, invalid("s3load: URI %q has no key: write it as s3://%s/path/to/model.gguf", uri, bucket)
	case strings.HasSuffix(key, "/"):
		return Object{}, invalid("s3load: URI %q ends in / and so names a prefix, not an object: add the object's name", uri)
	case len(key) > 1024:
		return Object{}, invalid("s3load: URI %q: key is %d bytes, S3 allows at most 1024", uri, len(key))
	case !utf8.ValidString(key):
		return Object{}, invalid("s3load: URI %q: key is not valid UTF-8", uri)
	}
	return Object{Bucket: bucket, Key: key}, nil
}

// checkBucket applies S3's bucket naming rules, loosely enough to accept
// old buckets with capitals or underscores.
func checkBucket(b string) error {
	if b == "" {
		return fmt.Errorf("no bucket: write it as s3://bucket/key")
	}
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket %q must be 3 to 63 characters long", b)
	}
	for _, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune(".-_", c)) {
			return fmt.Errorf("bucket %q has %q: bucket names hold only letters, digits, '.', '-' and '_'", b, c)
		}
	}
	return nil
}
