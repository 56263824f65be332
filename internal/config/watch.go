package config

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Watcher follows a configuration file, such as a mounted ConfigMap:
// every Interval it reads the file and, when the content changed, parses
// it. A valid file is handed to Apply with the changes it makes; an
// invalid one is logged with the reason and the last good one stays in
// force. Reading a small file every few seconds costs nothing measurable,
// and unlike change notifications it sees a ConfigMap's symlink swap.
type Watcher struct {
	Path     string
	Interval time.Duration // defaults to 2s
	// Apply receives the new configuration and the changes from the last
	// good one (see Diff). It runs on the watcher's goroutine.
	Apply func(cfg Config, changes []Change)
	Log   zerolog.Logger
}

// Change is one setting that differs between two configurations. Values
// are shown redacted.
type Change struct {
	Key      string // as in the file, e.g. roles.developer.concurrency
	Old, New string
}

func (c Change) String() string { return fmt.Sprintf("%s: %s → %s", c.Key, c.Old, c.New) }

// Run watches until ctx ends. current is the configuration in force, read
// from the file's current content.
func (w *Watcher) Run(ctx context.Context, current Config) {
	interval := w.Interval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	// The first look compares the file with current at once: it may have
	// changed since current was read. After that a change is taken once
	// the file reads the same at two looks in a row: a file being written
	// (truncated, then filled, as most editors and os.WriteFile do) is
	// not taken for a broken one.
	var last, seen []byte
	var looked bool // seen holds what the previous look read, if it differed from last
	t := time.NewTicker(interval)
	defer t.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		data, err := os.ReadFile(w.Path)
		if err != nil {
			if last != nil || first {
				w.Log.Warn().Err(err).Str("file", w.Path).Msg("configuration file unreadable; keeping the last good configuration")
				last = nil
			}
			continue
		}
		if bytes.Equal(data, last) {
			looked = false
			continue
		}
		if !first && (!looked || !bytes.Equal(data, seen)) {
			seen, looked = data, true // look again next time
			continue
		}
		last, looked = data, false
		next, err := Parse(data)
		if err != nil {
			w.Log.Error().Str("file", w.Path).Str("reason", err.Error()).Msg("configuration refused; keeping the last good configuration")
			continue
		}
		changes := Diff(current, next)
		if len(changes) == 0 {
			continue
		}
		current = next
		w.Apply(next, changes)
	}
}

// Diff lists the settings that differ between two configurations, by key,
// with redacted values.
func Diff(old, new Config) []Change {
	// Compared as they are (a new key is a change), shown redacted.
	a, b := flatten(old), flatten(new)
	ra, rb := flatten(old.Redacted()), flatten(new.Redacted())
	shown := func(redacted map[string]string, k string) string {
		if v, ok := redacted[k]; ok {
			return v
		}
		return "***"
	}
	var out []Change
	for k, v := range b {
		if a[k] != v {
			c := Change{Key: k, Old: orUnset(shown(ra, k)), New: orUnset(shown(rb, k))}
			if _, had := a[k]; !had {
				c.Old = "(unset)"
			}
			if c.Old == c.New {
				c.New += " (changed)"
			}
			out = append(out, c)
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			out = append(out, Change{Key: k, Old: shown(ra, k), New: "(unset)"})
		}
	}
	slices.SortFunc(out, func(x, y Change) int { return strings.Compare(x.Key, y.Key) })
	return out
}

// NeedsRestart reports whether a change only takes effect when the
// service restarts. Live are the roles' models, concurrency, temperature
// and review policies, the model providers and the reviewer's model;
// everything else (where a service connects, what it stores, the
// JetStream topology, budgets, limits, redelivery) waits for a restart.
func (c Change) NeedsRestart() bool {
	if strings.HasPrefix(c.Key, "models.") || c.Key == "review.model" {
		return false
	}
	if rest, ok := strings.CutPrefix(c.Key, "roles."); ok {
		_, field, _ := strings.Cut(rest, ".")
		switch strings.SplitN(field, ".", 2)[0] {
		case "model", "fallbacks", "concurrency", "temperature", "review":
			return false
		}
	}
	return true
}

func orUnset(s string) string {
	if s == "" {
		return "(unset)"
	}
	return s
}

// flatten maps every leaf of a configuration's JSON form to its value.
func flatten(c Config) map[string]string {
	data, _ := json.Marshal(c)
	var v any
	_ = json.Unmarshal(data, &v)
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				key := k
				if prefix != "" {
					key = prefix + "." + k
				}
				walk(key, e)
			}
		case nil:
		default:
			b, _ := json.Marshal(x)
			out[prefix] = string(b)
		}
	}
	walk("", v)
	return out
}
