package main

import (
	"context"
	"strings"

	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/internal/redact"
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
	w := &config.Watcher{Path: a.ConfigPath, Log: a.Log, Apply: a.applyConfig}
	// Changes are measured against the file as the services started with
	// it, not against the configuration in force, which flags and the
	// environment override; an edit made while Start waited is then seen.
	base := a.Config
	if a.ConfigFile != nil {
		base = *a.ConfigFile
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
	redact.Add(cfg.Secrets()...) // a new key is masked before anything can show it
	live := 0
	for _, c := range changes {
		// Warnings, so that troupe dev's default level shows them too: a
		// change of behaviour while running is worth seeing.
		ev := a.Log.Warn()
		msg := "configuration changed"
		if c.NeedsRestart() {
			msg = "configuration changed; takes effect at the next restart"
		} else {
			live++
		}
		ev.Str("file", a.ConfigPath).Str("key", c.Key).Str("old", c.Old).Str("new", c.New).Msg(msg)
	}
	if live == 0 {
		return
	}
	if a.orch != nil {
		for _, c := range changes {
			if strings.HasPrefix(c.Key, "models.") {
				a.Log.Warn().Str("key", c.Key).Msg("the orchestrator's planner keeps its model until the next restart")
				break
			}
		}
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
		a.rev.SetSecrets(configSecrets(cfg, a.Dashboard))
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
