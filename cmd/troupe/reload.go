package main

import (
	"context"

	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/internal/llm"
)

// watchConfig applies changes to the configuration file while the
// services run (a mounted ConfigMap is updated in place): the roles'
// models, concurrency and review policies, the model providers and the
// reviewer's model. Other changes are logged as waiting for a restart; an
// invalid file is refused and the last good configuration kept.
func (a *App) watchConfig(ctx context.Context) {
	if a.ConfigPath == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	w := &config.Watcher{Path: a.ConfigPath, Interval: a.ConfigInterval, Log: a.Log, Apply: a.applyConfig}
	// Changes are measured against the file as it is, not against the
	// configuration in force, which flags and the environment override.
	base, _, err := config.Load(a.ConfigPath)
	if err != nil {
		base = a.Config
	}
	go func() {
		defer close(done)
		w.Run(ctx, base)
	}()
	a.stopping = append(a.stopping, func(context.Context) error { cancel(); <-done; return nil })
	a.Log.Info().Str("file", a.ConfigPath).Msg("watching the configuration file for changes")
}

// applyConfig makes a new configuration current in the running services.
func (a *App) applyConfig(cfg config.Config, changes []config.Change) {
	live := 0
	for _, c := range changes {
		ev := a.Log.Info()
		msg := "configuration changed"
		if c.NeedsRestart() {
			ev = a.Log.Warn()
			msg = "configuration changed; takes effect at the next restart"
		} else {
			live++
		}
		ev.Str("file", a.ConfigPath).Str("key", c.Key).Str("old", c.Old).Str("new", c.New).Msg(msg)
	}
	if live == 0 {
		return
	}
	models, err := llm.ForRoles(cfg, a.Roles)
	if err != nil {
		a.Log.Error().Err(err).Msg("configuration refused: its models cannot be built; keeping the running ones")
		return
	}
	if a.rev != nil {
		reviewer, err := llm.Reviewer(cfg, models)
		if err != nil {
			a.Log.Error().Err(err).Msg("configuration refused: review.model; keeping the running reviewer")
			return
		}
		a.rev.SetPolicies(cfg.Policies())
		a.rev.SetReviewer(reviewer)
	}
	for _, w := range a.workers {
		role := w.Role()
		w.SetModel(a.model(role, models))
		if a.FixedConcurrency == 0 {
			w.SetConcurrency(cfg.WithDefaults().Roles[role].Concurrency)
		}
	}
	a.Log.Info().Int("changes", live).Msg("configuration applied to the running services")
}
