package secretscan

import (
	"encoding/base64"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Secrets are built from parts so this file holds no secret-looking literal.
var (
	rep = strings.Repeat
	// configuredKey is a configured model API key: sk- and 17 characters,
	// too short for any rule.
	configuredKey = "sk-" + "Tq7Rb2Xw9Lm4Zp8Kd"
	stripeKey     = "sk_" + "live_" + "51HqLyjWDarjtT1zdp7dcXYZabc"
	awsID         = "AKIA" + "Q3EGRJ5XK2M7PLZW"
	slackHook     = "https://hooks.slack.com/services/" + "T024BE7LD/B01A2B3C4D5/" + "k8Jd7Hs6Gf5Ds4Aq3Wz2Xc1V"
	githubPAT     = "github_pat_" + "11ABCDEFG0" + "aB3dE5gH7jK9mN1pQ3sT5v"
	openaiProj    = "sk-" + "proj-" + "Xk29fjQ8LmZp4RtY7vWc1NbH3sDg6KaE"
)

// TestScanFindsEveryForm: each form a test saw promoted (issue 15) is found,
// with its kind and line, and masking leaves no trace of it.
func TestScanFindsEveryForm(t *testing.T) {
	t.Parallel()
	s := New(configuredKey)
	tests := []struct {
		name, path, text, secret, kind string
		line                           int
	}{
		{"configured key", "config.md", "Use the key " + configuredKey + " for staging.", configuredKey, KindConfigured, 1},
		{"configured key lower case", "notes.txt", "x\nkey=" + strings.ToLower(configuredKey), strings.ToLower(configuredKey), KindConfigured, 2},
		{"configured key in base64", "k8s.yaml", "data:\n  key: " + base64.StdEncoding.EncodeToString([]byte("Bearer "+configuredKey)), "", KindConfigured, 2},
		{"json api_key", "config.json", "{\n  \"api_key\": \"9fQ2xL7mZ4kR8tW1vB6nC3hJ\"\n}", "9fQ2xL7mZ4kR8tW1vB6nC3hJ", "generic-api-key", 2},
		{"json password", "config.json", `{"user": "app", "password": "Tr0ub4dor&3-xK!"}`, "Tr0ub4dor&3-xK!", "quoted-credential", 1},
		{"stripe live key", "billing.go", `stripe.Key = "` + stripeKey + `"`, stripeKey, "stripe-access-token", 1},
		{"postgres url", "RUNBOOK.md", "DATABASE_URL=postgres://app:pass@db.internal:5432/app", "pass", "url-credentials", 1},
		{"bearer header", "api.md", "curl -H 'Authorization: Bearer 7f3kQ9zL2mX8vB4nR6tY1wC5'", "7f3kQ9zL2mX8vB4nR6tY1wC5", "bearer-token", 1},
		{"slack webhook", "notify.py", "HOOK = '" + slackHook + "'", "k8Jd7Hs6Gf5Ds4Aq3Wz2Xc1V", "slack-webhook-url", 1},
		{"github fine-grained pat", "ci.sh", "export GH_TOKEN=" + githubPAT, githubPAT, "github-pat-any-length", 1},
		{"yaml folded value", "values.yaml", "service:\n  api_key: >-\n    " + stripeKey + "\n", stripeKey, "stripe-access-token", 3},
		{"yaml folded generic", "values.yaml", "password: >\n  hX8kQ2vL9mZ4pW7r\n", "hX8kQ2vL9mZ4pW7r", "generic-api-key", 2},
		{"key with your", "app.env", "API_KEY=your" + "8fK2mQ9xL4vR7tZ1nB", "your8fK2mQ9xL4vR7tZ1nB", "generic-api-key", 1},
		{"key with example", "app.env", "api-key: example-key-" + "0123456789", "example-key-0123456789", "generic-api-key", 1},
		{"key with sample", "app.json", `{"token": "sample` + `_9xK2mQ8vL4rT7zW1"}`, "sample_9xK2mQ8vL4rT7zW1", "generic-api-key", 1},
		{"openai project key", "SKILL.md", "Call with " + openaiProj, openaiProj, "sk-api-key", 1},
		{"aws key id", "SKILL.md", "aws_access_key_id = " + awsID, awsID, "aws-access-token", 1},
		{"private key block", "SKILL.md", "-----BEGIN RSA " + "PRIVATE KEY-----\n" + rep("MIIEowIBAAKCAQEA", 4) + "\n-----END RSA " + "PRIVATE KEY-----\n", "MIIEowIBAAKCAQEA", "private-key", 1},
		{"private key header alone", "SKILL.md", "x\n-----BEGIN OPENSSH " + "PRIVATE KEY-----", "", "private-key-header", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			found := s.Scan(tt.path, tt.text)
			require.NotEmpty(t, found, "nothing found")
			require.Contains(t, Kinds(found), tt.kind)
			for _, f := range found {
				if f.Kind == tt.kind {
					require.Equal(t, tt.line, f.Line)
				}
			}
			masked := Mask(tt.text, found)
			require.Contains(t, masked, "[secret: ")
			if tt.secret != "" {
				require.NotContains(t, masked, tt.secret)
			}
			require.NotContains(t, masked, configuredKey)
		})
	}
}

// TestScanPassesPlaceholdersAndProse: placeholders of low entropy, names
// without values and prose are no secrets.
func TestScanPassesPlaceholdersAndProse(t *testing.T) {
	t.Parallel()
	s := New(configuredKey)
	for _, text := range []string{
		`api_key = "<your-key-here>"`,
		"Authorization: Bearer <your-token-here>",
		"Authorization: Bearer $TOKEN",
		"Authorization: Bearer YOUR_TOKEN_HERE",
		"api_key: ${API_KEY}",
		`{"password": "{{ .Values.password }}"}`,
		"DATABASE_URL=postgres://app:${DB_PASSWORD}@db:5432/app",
		"postgres://app:<password>@db:5432/app",
		"postgres://app@db:5432/app?sslmode=disable",
		"https://example.com/path?q=1",
		"password: xxxxxxxxxxxxxxxxxxxxxxxx",
		"password: hunter2",
		`token := os.Getenv("TOKEN")`,
		"Rotate the API key and the secret regularly; tokens expire.",
		"AKIAIOSFODNN7" + "EXAMPLE",
		"sk-abc",
		"Store the key in the secret manager and pass its name: key_name = billing-primary",
		"func (s *Server) authorize(token string) error { return nil }",
	} {
		require.Empty(t, s.Scan("README.md", text), "%q", text)
	}
}

// TestScanPath: a key in a file's name or directory is found, with or
// without an extension, and masked in the path.
func TestScanPath(t *testing.T) {
	t.Parallel()
	s := New(configuredKey)
	for _, p := range []string{
		"keys/" + awsID + "/credentials",
		"config/" + stripeKey + ".json",
		"notes/" + configuredKey + ".md",
		"vendor/" + stripeKey + "/go.sum",
	} {
		found := s.ScanPath(p)
		require.NotEmpty(t, found, p)
		masked := s.MaskPath(p)
		require.Contains(t, masked, "[secret: ", p)
		require.NotContains(t, masked, awsID)
		require.NotContains(t, masked, stripeKey)
		require.NotContains(t, masked, configuredKey)
	}
	require.Equal(t, []string{"pkcs12-file"}, Kinds(s.ScanPath("certs/client.p12")))
	require.Empty(t, s.ScanPath("docs/api-keys.md"))
	require.Empty(t, s.ScanPath("src/token_store.go"))
}

// TestConfiguredShortSecretIgnored: a configured secret too short to tell
// from text is not searched for.
func TestConfiguredShortSecretIgnored(t *testing.T) {
	t.Parallel()
	require.Empty(t, New("nats").Scan("", "the nats server"))
}

// TestRulesLoad: gitleaks' rules and Troupe's load, every one.
func TestRulesLoad(t *testing.T) {
	t.Parallel()
	c := defaultRules()
	require.Greater(t, len(c.rules), 200)
	ids := map[string]bool{}
	for _, r := range c.rules {
		ids[r.id] = true
	}
	for _, id := range []string{"generic-api-key", "stripe-access-token", "slack-webhook-url", "url-credentials", "bearer-token", "quoted-credential"} {
		require.True(t, ids[id], id)
	}
	// The allowlists load too: gitleaks' global one and the generic rule's.
	require.NotEmpty(t, c.global)
	for _, r := range c.rules {
		if r.id == "generic-api-key" {
			require.GreaterOrEqual(t, len(r.allow), 4, "gitleaks' four and Troupe's dotted names")
		}
	}
}

// BenchmarkScan reports the cost of scanning output without secrets, in
// ns per KB: this package's own Go source (code with many keys, tokens and
// assignments) and prose that names keys and tokens on every line. Run it
// with
//
//	go test -run '^$' -bench Scan ./internal/secretscan/
func BenchmarkScan(b *testing.B) {
	var code strings.Builder
	for _, name := range []string{"scan.go", "rules.go", "lines.go"} {
		src, err := os.ReadFile(name)
		require.NoError(b, err)
		code.Write(src)
	}
	prose := rep("The key may make a request now; the token bucket refills each second.\n", 60) +
		rep("Requests over the limit get 429 with Retry-After. Configure api_key and secret in the environment.\n", 60)
	s := New(configuredKey, "a-nats-password-1234")
	for _, bc := range []struct{ name, path, text string }{{"code", "scan.go", code.String()}, {"prose", "README.md", prose}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.text)))
			for b.Loop() {
				if f := s.Scan(bc.path, bc.text); len(f) != 0 {
					b.Fatalf("found %v", f)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(float64(len(bc.text))/1024), "ns/KB")
		})
	}
}

// TestGenericRegexPinned: genericValueAt is written for gitleaks' generic
// rule as it is; a refresh that changes the rule must revisit it.
func TestGenericRegexPinned(t *testing.T) {
	t.Parallel()
	for _, r := range defaultRules().rules {
		if r.id == "generic-api-key" {
			require.Equal(t, genericRegex, r.re.String())
			return
		}
	}
	t.Fatal("no generic-api-key rule")
}
