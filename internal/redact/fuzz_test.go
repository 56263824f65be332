package redact_test

import (
	"strings"
	"testing"

	"github.com/troupe-dev/troupe/internal/redact"
)

// FuzzString: masking never fails on any text (it runs on every log
// line), and a known secret put anywhere in it is gone.
func FuzzString(f *testing.F) {
	for _, seed := range []string{
		"", "=", ":", "@", "://@", "key=", "a:b", `"password":"`, `\"token\": \"`, "Bearer ", "bearer x",
		`Post "http://127.0.0.1:1/v1?key=SECRET/chat/completions": EOF`,
		`{"level":"warn","error":"x-api-key: abc","url":"nats://u:p@h:4222,nats://v:q@h2"}`,
		"Authorization: Basic \t", "password=x: ", "\xff\xfe=\x00",
	} {
		f.Add(seed, "sk-fuzz-secret-1234")
	}
	f.Fuzz(func(t *testing.T, text, secret string) {
		r := redact.New(secret)
		_ = redact.Shapes(text)
		if len(secret) < redact.MinLen || strings.Contains(secret, "*") {
			return // a mask could spell it
		}
		for _, cut := range []int{0, len(text) / 2, len(text)} {
			in := text[:cut] + " " + secret + " " + text[cut:]
			if out := r.String(in); strings.Contains(asciiLower(out), asciiLower(secret)) {
				t.Fatalf("secret %q still in %q", secret, out)
			}
		}
	})
}

// asciiLower lower-cases ASCII letters only (strings.ToLower turns invalid
// UTF-8 into U+FFFD, which makes different texts equal).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
