package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/troupe-dev/troupe/schemas"
)

// natsConfig runs troupe nats-config and returns what it printed and the
// server options a nats-server reads from it.
func natsConfig(t *testing.T, args ...string) (string, *server.Options) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), append([]string{"nats-config", "--bcrypt-cost", "4"}, args...), strings.NewReader(""), &out, &errb)
	require.Equal(t, 0, code, errb.String())
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "troupe-auth.conf"), out.Bytes(), 0o600))
	conf := filepath.Join(dir, "nats-server.conf")
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, "listen: 127.0.0.1:-1\njetstream { store_dir: %q }\ninclude ./troupe-auth.conf\n", filepath.Join(dir, "js")), 0o600))
	opts, err := server.ProcessConfigFile(conf)
	require.NoError(t, err, "the output is a nats-server configuration:\n%s", out.String())
	return out.String(), opts
}

// matches reports whether a NATS subject filter matches subject.
func matches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}

func allows(allow []string, subject string) bool {
	return slices.ContainsFunc(allow, func(f string) bool { return matches(f, subject) })
}

func TestNATSConfig(t *testing.T) {
	t.Parallel()
	envDir := t.TempDir()
	out, opts := natsConfig(t, "--env-dir", envDir)

	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	require.ElementsMatch(t, userNames(), slices.Collect(maps.Keys(users)), "one user per service and per role")

	// Each user's env file holds the password its hash was made from.
	for name, u := range users {
		path := filepath.Join(envDir, name+".env")
		st, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), path)
		env := readEnv(t, path)
		require.Equal(t, name, env["TROUPE_NATS_USER"])
		require.Equal(t, "_INBOX."+name, env["TROUPE_NATS_INBOX_PREFIX"])
		require.True(t, strings.HasPrefix(u.Password, "$2a$"), "bcrypt, not the password")
		require.NoError(t, bcrypt.CompareHashAndPassword([]byte(u.Password), []byte(env["TROUPE_NATS_PASSWORD"])), name)
		require.NotContains(t, out, env["TROUPE_NATS_PASSWORD"], "no plain password in the server's configuration")
	}
	require.Nil(t, users["admin"].Permissions, "the admin may do everything")

	pub := func(user, subject string) bool { return allows(users[user].Permissions.Publish.Allow, subject) }
	sub := func(user, subject string) bool { return allows(users[user].Permissions.Subscribe.Allow, subject) }
	mentions := func(user, s string) bool {
		p := users[user].Permissions
		return slices.ContainsFunc(slices.Concat(p.Publish.Allow, p.Subscribe.Allow), func(x string) bool { return strings.Contains(x, s) })
	}

	// A developer worker consumes developer tasks, and nothing else.
	require.True(t, mentions("worker-developer", "workers-developer"))
	require.False(t, mentions("worker-developer", "workers-tester"))
	require.True(t, pub("worker-developer", "$JS.API.CONSUMER.MSG.NEXT.TROUPE_TASKS.workers-developer"))
	require.True(t, pub("worker-developer", "$JS.ACK.TROUPE_TASKS.workers-developer.1.2.3.4.5"))
	require.False(t, pub("worker-developer", "$JS.API.CONSUMER.MSG.NEXT.TROUPE_TASKS.workers-tester"))
	require.False(t, sub("worker-developer", "troupe.tasks.tester"))
	require.False(t, sub("worker-developer", "_INBOX.worker-tester.abc"), "nor read another user's inbox")
	// It publishes what a developer worker does, and no decision.
	require.True(t, pub("worker-developer", "troupe.review.developer"))
	require.True(t, pub("worker-developer", "troupe.events.j1.output_staged"))
	require.False(t, pub("worker-developer", "troupe.review.tester"))
	require.False(t, pub("worker-developer", "troupe.tasks.developer"))
	require.False(t, pub("worker-developer", "troupe.events.j1.output_promoted"))
	for _, kind := range []string{"job_failed", "task_dead_lettered", "job_budget_exceeded", "job_done"} {
		require.False(t, pub("worker-developer", "troupe.events.j1."+kind), "a worker announces %s of any job", kind)
	}
	require.False(t, pub("worker-developer", "troupe.api.reviews.decide"))
	require.False(t, pub("worker-developer", "$JS.API.STREAM.CREATE.TROUPE_TASKS"))
	require.False(t, pub("worker-developer", "$JS.API.STREAM.DELETE.TROUPE_TASKS"))
	require.True(t, pub("worker-developer", "_INBOX.client.abc.1"), "answers pings on inboxes")

	// No user answers on whatever reply subject a request names: a
	// service's answers go to inboxes only, never to a stream or an
	// advisory.
	for name, u := range users {
		if name == "admin" {
			continue
		}
		require.Nil(t, u.Permissions.Response, "%s has allow_responses", name)
		require.False(t, pub(name, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TROUPE_EVENTS.orchestrator"), "%s forges advisories", name)
	}

	// Only the review service serves decisions and publishes them; the
	// reviewer and the dashboard (the review user) may ask for one.
	for name := range users {
		if name == "admin" {
			continue
		}
		require.Equal(t, name == "review", sub(name, "troupe.api.reviews.decide"), "%s serves decisions", name)
		require.Equal(t, name == "review" || name == "orchestrator", pub(name, "troupe.events.j1.output_promoted"), "%s publishes promotions", name)
		require.Equal(t, name == "review" || name == "reviewer", pub(name, "troupe.api.reviews.decide."+name), "%s asks for decisions", name)
		require.False(t, pub(name, "troupe.api.reviews.decide"), "%s asks for decisions that say no sender", name)
		require.False(t, pub(name, "troupe.api.reviews.decide.ada"), "%s asks for decisions as ada", name)
		require.Equal(t, name == "orchestrator", pub(name, "$JS.API.STREAM.CREATE.TROUPE_TASKS"), "%s creates streams", name)
		require.False(t, pub(name, "$JS.API.STREAM.DELETE.TROUPE_TASKS"), "%s deletes streams", name)
		require.False(t, pub(name, "$JS.API.STREAM.PURGE.TROUPE_TASKS"), "%s purges streams", name)
		require.False(t, sub(name, "_INBOX.x"), "%s reads every inbox", name)
	}
	require.True(t, pub("client", "troupe.api.jobs.submit"))
	require.True(t, sub("client", "troupe.events.j1.job_done"))
	require.False(t, pub("client", "troupe.api.dlq.replay.client"))
	require.True(t, pub("reviewer", "troupe.api.dlq.replay.reviewer"))
	require.True(t, sub("orchestrator", "troupe.api.dlq.replay.reviewer"))
	require.True(t, sub("review", "troupe.api.reviews.decide.reviewer"))
	require.True(t, sub("orchestrator", "troupe.api.jobs.submit"))
	require.False(t, sub("review", "troupe.api.jobs.submit"))
	require.True(t, pub("review", "$JS.API.CONSUMER.INFO.TROUPE_TASKS.workers-tester"), "the dashboard reads queue depths")
	require.False(t, pub("review", "$JS.API.CONSUMER.MSG.NEXT.TROUPE_TASKS.workers-tester"), "but takes no task")
}

// TestNATSConfigPeople: each person gets a user of their own, which reads
// its own replies only and acts under its own name only.
func TestNATSConfigPeople(t *testing.T) {
	t.Parallel()
	envDir := t.TempDir()
	_, opts := natsConfig(t, "--env-dir", envDir, "--person", "ada:reviewer", "--person", "bob")
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	require.ElementsMatch(t, append(userNames(), "ada", "bob"), slices.Collect(maps.Keys(users)))
	pub := func(user, subject string) bool { return allows(users[user].Permissions.Publish.Allow, subject) }
	sub := func(user, subject string) bool { return allows(users[user].Permissions.Subscribe.Allow, subject) }
	require.Equal(t, "_INBOX.ada", readEnv(t, filepath.Join(envDir, "ada.env"))["TROUPE_NATS_INBOX_PREFIX"])
	require.True(t, sub("ada", "_INBOX.ada.x1"))
	require.False(t, sub("ada", "_INBOX.bob.x1"), "ada reads her replies only")
	require.False(t, sub("bob", "_INBOX.ada.x1"))
	require.False(t, sub("client", "_INBOX.ada.x1"))
	require.True(t, pub("ada", "troupe.api.jobs.submit"))
	require.True(t, pub("ada", "troupe.api.reviews.decide.ada"))
	require.True(t, pub("ada", "troupe.api.dlq.discard.ada"))
	require.False(t, pub("ada", "troupe.api.reviews.decide.bob"), "ada decides as herself only")
	require.False(t, pub("ada", "troupe.api.reviews.decide.review"), "nor as the dashboard")
	require.False(t, pub("ada", "troupe.api.reviews.decide"))
	require.True(t, pub("bob", "troupe.api.jobs.submit"))
	require.False(t, pub("bob", "troupe.api.reviews.decide.bob"), "bob reads and submits only")

	for _, bad := range [][]string{{"--person", "a.b"}, {"--person", "review"}, {"--person", "ada", "--person", "ada"}, {"--person", "ada:boss"}, {"--person", "worker-x"}} {
		var out, errb bytes.Buffer
		code := Run(context.Background(), append([]string{"nats-config", "--env-dir", t.TempDir()}, bad...), strings.NewReader(""), &out, &errb)
		require.Equal(t, 1, code, "%v: %s", bad, errb.String())
		require.Contains(t, errb.String(), "--person", "%v", bad)
	}
}

func TestNATSConfigPasswordsFromEnv(t *testing.T) {
	names := userNames()
	for _, n := range names {
		t.Setenv(passwordVar(n), "pw-of-"+n)
	}
	require.Equal(t, "TROUPE_NATS_PASSWORD_WORKER_DEVELOPER", passwordVar("worker-developer"))
	_, opts := natsConfig(t, "--passwords-from-env")
	require.Len(t, opts.Users, len(names))
	for _, u := range opts.Users {
		require.NoError(t, bcrypt.CompareHashAndPassword([]byte(u.Password), []byte("pw-of-"+u.Username)), u.Username)
	}

	t.Setenv("TROUPE_NATS_PASSWORD_WORKER_TESTER", "")
	var out, errb bytes.Buffer
	require.Equal(t, 1, Run(context.Background(), []string{"nats-config", "--passwords-from-env"}, nil, &out, &errb))
	require.Contains(t, errb.String(), "TROUPE_NATS_PASSWORD_WORKER_TESTER is not set")
	require.Empty(t, out.String(), "nothing half-written")

	errb.Reset()
	require.Equal(t, 1, Run(context.Background(), []string{"nats-config"}, nil, &out, &errb))
	require.Contains(t, errb.String(), "--env-dir DIR")
}

// userNames are the users troupe nats-config writes.
func userNames() []string {
	names := []string{"orchestrator", "review", "client", "reviewer", "admin"}
	for _, role := range schemas.Roles {
		names = append(names, "worker-"+role)
	}
	return names
}

// readEnv reads a KEY=value file, skipping comments.
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[k] = v
		}
	}
	return env
}
