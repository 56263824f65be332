package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/schemas"
)

// natsUser is a NATS user with its password, in plain text and hashed.
type natsUser struct {
	bus.User
	Password string
	Hash     string
}

// natsUsers returns the users of a least-privilege deployment with their
// passwords: password(name) gives one, or "" for a random one.
func natsUsers(topo bus.Topology, password func(user string) (string, error), cost int) ([]natsUser, error) {
	var out []natsUser
	for _, u := range topo.Users() {
		pw, err := password(u.Name)
		if err != nil {
			return nil, err
		}
		if pw == "" {
			pw = rand.Text() // 26 characters of base32: 130 random bits, safe in env files and shells
		}
		hash, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
		if err != nil {
			return nil, fmt.Errorf("hashing the password of %s: %w", u.Name, err)
		}
		out = append(out, natsUser{User: u, Password: pw, Hash: string(hash)})
	}
	return out, nil
}

// writeNATSAuth writes the nats-server authorization block of the users.
func writeNATSAuth(w io.Writer, prefix string, users []natsUser) error {
	quote := func(s string) (string, error) {
		if strings.ContainsAny(s, "\"\\\n\r") {
			return "", fmt.Errorf("%q cannot be written in a nats-server configuration", s)
		}
		return `"` + s + `"`, nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Troupe's NATS users, one per service: written by troupe nats-config (subject prefix %q).\n", prefix)
	b.WriteString("# Include this file in nats-server.conf beside jetstream { ... }, e.g.  include ./troupe-auth.conf\n")
	b.WriteString("# Passwords are bcrypt hashes; each service reads its own from the environment:\n")
	b.WriteString("# TROUPE_NATS_USER, TROUPE_NATS_PASSWORD and TROUPE_NATS_INBOX_PREFIX (the env files).\n")
	b.WriteString("authorization {\n  users = [\n")
	list := func(indent, name string, subjects []string) error {
		fmt.Fprintf(&b, "%s%s: {\n%s  allow: [\n", indent, name, indent)
		for _, s := range subjects {
			q, err := quote(s)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s    %s\n", indent, q)
		}
		fmt.Fprintf(&b, "%s  ]\n%s}\n", indent, indent)
		return nil
	}
	for _, u := range users {
		name, err := quote(u.Name)
		if err != nil {
			return err
		}
		hash, err := quote(u.Hash)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "    # %s: %s\n", u.Name, u.About)
		fmt.Fprintf(&b, "    {\n      user: %s\n      password: %s\n", name, hash)
		if p := u.Permissions; p != nil {
			b.WriteString("      permissions: {\n")
			if err := list("        ", "publish", p.Publish); err != nil {
				return err
			}
			if err := list("        ", "subscribe", p.Subscribe); err != nil {
				return err
			}
			b.WriteString("      }\n")
		}
		b.WriteString("    }\n")
	}
	b.WriteString("  ]\n}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// passwordVar is the variable --passwords-from-env reads a user's password from.
func passwordVar(user string) string {
	return "TROUPE_NATS_PASSWORD_" + strings.ToUpper(strings.ReplaceAll(user, "-", "_"))
}

// writeEnvFiles writes dir/<user>.env for each user, readable by its owner
// only: what docker compose's env_file and kubectl create secret
// --from-env-file read.
func writeEnvFiles(dir string, users []natsUser) (names []string, replaced int, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, err
	}
	for _, u := range users {
		name := u.Name + ".env"
		body := fmt.Sprintf("# NATS credentials of Troupe's %s user, written by troupe nats-config.\n"+
			"TROUPE_NATS_USER=%s\nTROUPE_NATS_PASSWORD=%s\nTROUPE_NATS_INBOX_PREFIX=%s\n",
			u.Name, u.Name, u.Password, bus.InboxPrefix(u.Name))
		path := filepath.Join(dir, name)
		// Rewritten in place keeps a mode someone widened: start afresh.
		err := os.Remove(path)
		switch {
		case err == nil:
			replaced++
		case !errors.Is(err, os.ErrNotExist):
			return nil, replaced, err
		}
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			return nil, replaced, err
		}
		names = append(names, name)
	}
	return names, replaced, nil
}

func runNATSConfig(_ context.Context, e *env, args []string) error {
	fs := newFlags(e, "nats-config", "nats-config (--env-dir DIR | --passwords-from-env) [--config FILE] > troupe-auth.conf")
	configPath := fs.String("config", "", "configuration file, for nats.prefix (default $TROUPE_CONFIG, else ./troupe.json when present)")
	envDir := fs.String("env-dir", "", "write each user's credentials to DIR/<user>.env (mode 0600), for docker compose env_file or kubectl create secret --from-env-file")
	fromEnv := fs.Bool("passwords-from-env", false, "take each user's password from TROUPE_NATS_PASSWORD_<USER> (e.g. TROUPE_NATS_PASSWORD_WORKER_DEVELOPER) instead of generating one")
	cost := fs.Int("bcrypt-cost", 11, "bcrypt cost of the hashed passwords")
	var persons stringsFlag
	fs.Var(&persons, "person", "a user of a person's own, NAME (reads and submits, as client) or NAME:reviewer (decides too, recorded under NAME); repeatable")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	people, err := parsePeople(persons)
	if err != nil {
		return err
	}
	if *envDir == "" && !*fromEnv {
		return errors.New("the passwords must go somewhere: --env-dir DIR writes one env file per user (or give them with --passwords-from-env)")
	}
	cfg, _, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	password := func(string) (string, error) { return "", nil }
	if *fromEnv {
		password = func(user string) (string, error) {
			if v := os.Getenv(passwordVar(user)); v != "" {
				return v, nil
			}
			return "", fmt.Errorf("--passwords-from-env: %s is not set (the password of %s)", passwordVar(user), user)
		}
	}
	// Every role: the orchestrator creates every role's consumer.
	topo := bus.Topology{Prefix: cfg.NATS.Prefix, Roles: schemas.Roles, ReplyPrefixes: cfg.NATS.ReplyPrefixes, People: people}
	users, err := natsUsers(topo, password, *cost)
	if err != nil {
		return err
	}
	if err := writeNATSAuth(e.stdout, topo.WithDefaults().Prefix, users); err != nil {
		return err
	}
	if *envDir != "" {
		names, replaced, err := writeEnvFiles(*envDir, users)
		if err != nil {
			return fmt.Errorf("--env-dir: %w", err)
		}
		fmt.Fprintf(e.stderr, "wrote %d env files to %s (mode 0600): %s\n", len(names), *envDir, strings.Join(names, " "))
		if replaced > 0 {
			fmt.Fprintf(e.stderr, "replaced %d env files that were there: their old passwords no longer match this block\n", replaced)
		}
		fmt.Fprintf(e.stderr, "give each service its own: docker compose env_file: %s/worker-developer.env; Kubernetes: kubectl create secret generic troupe-nats-worker-developer --from-env-file=%s/worker-developer.env\n", *envDir, *envDir)
	}
	return nil
}

var personName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// parsePeople reads --person values: NAME or NAME:reviewer, each NAME a
// subject token no service's user has.
func parsePeople(values []string) ([]bus.Person, error) {
	taken := map[string]bool{bus.UserOrchestrator: true, bus.UserReview: true, bus.UserClient: true, bus.UserReviewer: true, bus.UserAdmin: true}
	var out []bus.Person
	for _, v := range values {
		name, kind, _ := strings.Cut(v, ":")
		switch {
		case !personName.MatchString(name):
			return nil, fmt.Errorf("--person %q: a name is letters, digits, - and _ (it names the user's subjects)", v)
		case kind != "" && kind != "reviewer" && kind != "client":
			return nil, fmt.Errorf("--person %q: after the name, :reviewer (decides reviews) or nothing", v)
		case taken[name] || strings.HasPrefix(name, "worker-"):
			return nil, fmt.Errorf("--person %q: %s is taken (a service's user, or given twice)", v, name)
		}
		taken[name] = true
		out = append(out, bus.Person{Name: name, Decides: kind == "reviewer"})
	}
	return out, nil
}
