package redact_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/redact"
)

const key = "sk-Test_Key-4f9A2b7C1d8E"

// TestSecretForms: a known secret is masked in every form a provider, an
// HTTP library or an encoder has been seen to echo it in.
func TestSecretForms(t *testing.T) {
	t.Parallel()
	r := redact.New(key, "pa ss/w&rd+1")
	basic := base64.StdEncoding.EncodeToString([]byte("user:" + key))
	for _, form := range []string{
		key,
		strings.ToLower(key),
		strings.ToUpper(key),
		url.QueryEscape("pa ss/w&rd+1"),
		url.PathEscape("pa ss/w&rd+1"),
		base64.StdEncoding.EncodeToString([]byte(key)),
		base64.URLEncoding.EncodeToString([]byte(key)),
		base64.RawStdEncoding.EncodeToString([]byte(key)),
		base64.RawURLEncoding.EncodeToString([]byte(key)),
		fmt.Sprintf("%q", `pa ss/w&rd+1"`),
	} {
		msg := "the provider said: " + form + " is not valid"
		got := r.String(msg)
		require.Contains(t, got, redact.Mask, form)
		require.NotContains(t, got, form, form)
	}
	// Inside a longer base64 text, such as a Basic authorization, the
	// characters that encode the key are masked.
	got := r.String("Authorization header was " + basic)
	require.NotContains(t, got, basic)
	require.NotContains(t, got, base64.StdEncoding.EncodeToString([]byte(key))[8:20])
	// At the start of a longer base64 text (key:, as some proxies send).
	got = r.String("sent " + base64.StdEncoding.EncodeToString([]byte(key+":x")))
	require.NotContains(t, got, base64.RawStdEncoding.EncodeToString([]byte(key))[:24])
	// As a JSON string: escaped the way encoding/json escapes it.
	got = r.String(`{"echo":"pa ss/w\u0026rd+1"}`)
	require.Equal(t, `{"echo":"***"}`, got)
}

// TestShapes: credentials of well-known shapes are masked whatever their
// value, and ordinary text is left alone.
func TestShapes(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`Post "http://127.0.0.1:1/v1?key=SECRETVALUE123/chat/completions": EOF`: `Post "http://127.0.0.1:1/v1?key=***": EOF`,
		"dial https://h/v1?key=abc: connection refused":                         "dial https://h/v1?key=***: connection refused",
		"https://h/v1?api_key=abc&model=x":                                      "https://h/v1?api_key=***&model=x",
		"https://h/v1?access_token=abc&x-api-key=def&apikey=ghi":                "https://h/v1?access_token=***&x-api-key=***&apikey=***",
		"https://h/v1?sig=abc&X-Amz-Signature=def&client_secret=ghi":            "https://h/v1?sig=***&X-Amz-Signature=***&client_secret=***",
		"postgres://troupe:hunter2@db:5432/troupe":                              "postgres://***@db:5432/troupe",
		"nats://a:s3cret@h1:4222,nats://b:s3cret@h2:4222":                       "nats://***@h1:4222,nats://***@h2:4222",
		"https://ghp_token@github.com/x":                                        "https://***@github.com/x",
		"host=db user=troupe password=hunter2 dbname=troupe":                    "host=db user=troupe password=*** dbname=troupe",
		"Authorization: Bearer abc.def.ghi":                                     "Authorization: Bearer ***",
		"x-api-key: abcdef":                                                     "x-api-key: ***",
		`{"api_key": "abc", "password":"p w", "model": "m"}`:                    `{"api_key": "***", "password":"***", "model": "m"}`,
		`"error":"body: {\"apiKey\":\"abc\"}"`:                                  `"error":"body: {\"apiKey\":\"***\"}"`,
		"sent with bearer abcdefgh12345678":                                     "sent with bearer ***",
		// Left alone.
		"roles.developer.concurrency: 4 → 8":                          "roles.developer.concurrency: 4 → 8",
		`{"level":"warn","key":"roles.pm.model","message":"changed"}`: `{"level":"warn","key":"roles.pm.model","message":"changed"}`,
		"https://api.example.com/v1?api-version=2024-06-01":           "https://api.example.com/v1?api-version=2024-06-01",
		"monkey=1 sslkey=/etc/k max_tokens=5":                         "monkey=1 sslkey=/etc/k max_tokens=5",
		"mail bob@example.com":                                        "mail bob@example.com",
	} {
		require.Equal(t, want, redact.Shapes(in), in)
	}
}

// TestShortSecretsLeftToShapes: a secret shorter than MinLen would blank
// ordinary words; it is masked only where a shape says it is a secret.
func TestShortSecretsLeftToShapes(t *testing.T) {
	t.Parallel()
	r := redact.New("abc")
	require.Equal(t, "abc def password=***", r.String("abc def password=abc"))
}

// TestProcessWriter: the logger's writer masks every line with the
// secrets the process knows, including ones added after it was made.
func TestProcessWriter(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log := zerolog.New(redact.Writer(&out))
	const later = "later-added-secret-9f8e7d"
	redact.Add(later)
	log.Warn().Err(fmt.Errorf("provider echoed %s and %s", later, strings.ToUpper(later))).
		Str("url", "http://h/v1?key=abc").Msg("call failed")
	require.NotContains(t, out.String(), later)
	require.NotContains(t, out.String(), strings.ToUpper(later))
	require.NotContains(t, out.String(), "key=abc")
	require.Contains(t, out.String(), `"message":"call failed"`)
	require.Equal(t, "a *** b", redact.String("a "+later+" b"))
}

var sink string

// BenchmarkWriter measures what masking costs a log line: a typical line
// without any credential, and one with a secret and a shape to mask.
func BenchmarkWriter(b *testing.B) {
	for i := range 20 {
		redact.Add(fmt.Sprintf("sk-bench-secret-%02d-4f9a2b7c1d8e", i))
	}
	plain := []byte(`{"level":"info","service":"worker","role":"developer","job_id":"0c8e7f4e-5b8a-4f5e-9c1d-2a3b4c5d6e7f","task_id":"7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d","revision":0,"output_id":"5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9","files":3,"time":"2026-12-07T21:00:00Z","message":"output staged"}` + "\n")
	secret := []byte(`{"level":"warn","service":"worker","error":"fake/text: Post \"http://127.0.0.1:1/v1?key=SECRETVALUE123/chat/completions\": sk-bench-secret-07-4f9a2b7c1d8e","time":"2026-12-07T21:00:00Z","message":"handling failed; retrying"}` + "\n")
	for _, c := range []struct {
		name string
		line []byte
	}{{"plain", plain}, {"secret", secret}} {
		b.Run(c.name, func(b *testing.B) {
			w := redact.Writer(discard{})
			b.SetBytes(int64(len(c.line)))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = w.Write(c.line)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { sink = string(p[:1]); return len(p), nil }
