package llm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/internal/imagecheck"
)

// ForRoles builds every role's model from the configuration: the role's
// model (else models.default) with its fallbacks after it, or the offline
// model when none is configured. Calls to one provider share one limit on
// calls in flight (models.providers.<name>.maxConcurrency), whatever the role,
// and every model shares one bound on images decoded at once
// (models.imageDecodes).
func ForRoles(cfg config.Config, roles []string) (map[string]Model, error) {
	limiters := map[string]chan struct{}{}
	for name, p := range cfg.Models.Providers {
		limiters[name] = make(chan struct{}, max(p.MaxConcurrency, 1))
	}
	decodes := imagecheck.NewGate(cfg.Models.ImageDecodes)
	out := map[string]Model{}
	for _, role := range roles {
		rc := cfg.Roles[role]
		primary := cmp(rc.Model, cfg.Models.Default)
		if primary == "" || primary == "offline" {
			out[role] = NewOffline()
			continue
		}
		var chain []Model
		for _, ref := range append([]string{primary}, rc.Fallbacks...) {
			spec, err := specOf(cfg, ref)
			if err != nil {
				return nil, fmt.Errorf("roles.%s: %w", role, err)
			}
			spec.Temperature = rc.Temperature
			spec.MaxImageSide = cfg.Models.MaxImageSide
			spec.MaxImageBytes, spec.ImageDecodes = cfg.Models.MaxImageBytes, decodes
			provider, _, _ := strings.Cut(ref, "/")
			chain = append(chain, NewOpenAI(spec, limiters[provider]))
		}
		if len(chain) == 1 {
			out[role] = chain[0]
		} else {
			out[role] = &Fallbacks{Models: chain}
		}
	}
	return out, nil
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func specOf(cfg config.Config, ref string) (Spec, error) {
	provider, id, ok := strings.Cut(ref, "/")
	p, found := cfg.Models.Providers[provider]
	if !ok || !found {
		return Spec{}, fmt.Errorf("model %q: no provider %q in models.providers", ref, provider)
	}
	for _, m := range p.Models {
		if m.ID == id {
			return Spec{
				Ref: ref, ID: m.ID, BaseURL: p.BaseURL, APIKey: p.APIKey,
				Images: slices.Contains(m.Input, "image"), ContextWindow: m.ContextWindow, MaxTokens: m.MaxTokens,
			}, nil
		}
	}
	return Spec{}, fmt.Errorf("model %q: provider %q has no model %q", ref, provider, id)
}

// Fallbacks tries its models in order: the next one when a call fails in a
// way another model may not (a rate limit, an outage, no image input).
type Fallbacks struct{ Models []Model }

// Name is the first model's.
func (f *Fallbacks) Name() string { return f.Models[0].Name() }

// Spec is the first model's, when it has one.
func (f *Fallbacks) Spec() Spec {
	if s, ok := f.Models[0].(interface{ Spec() Spec }); ok {
		return s.Spec()
	}
	return Spec{}
}

// Generate returns the first model's answer that comes. When none does,
// a transient failure wins over a refusal (the task is retried, with the
// shortest Retry-After), so one model's refusal does not fail a task
// another model could still take.
func (f *Fallbacks) Generate(ctx context.Context, req Request) (Response, error) {
	var errs []error
	for _, m := range f.Models {
		resp, err := m.Generate(ctx, req)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return Response{}, err
		}
		errs = append(errs, err)
	}
	return Response{}, pickError(errs)
}

// pickError is the error to report when every model failed: the transient
// one with the shortest Retry-After, else the first.
func pickError(errs []error) error {
	var best *RetryError
	for _, err := range errs {
		var r *RetryError
		if errors.As(err, &r) && (best == nil || r.RetryAfter < best.RetryAfter) {
			best = r
		}
	}
	if best != nil {
		return best
	}
	return errs[0]
}

// Complete asks the models in order, like Generate.
func (f *Fallbacks) Complete(ctx context.Context, system, user string, record func(Call)) (string, error) {
	var first error
	for _, m := range f.Models {
		c, ok := m.(Completer)
		if !ok {
			continue
		}
		answer, err := c.Complete(ctx, system, user, record)
		if err == nil {
			return answer, nil
		}
		if ctx.Err() != nil {
			return "", err
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = fmt.Errorf("%s cannot answer plain questions", f.Name())
	}
	return "", first
}

// Reviewer is the model that reviews for roles under the "model" policy:
// review.model, else models.default. It is nil when neither is set.
func Reviewer(cfg config.Config, roles map[string]Model) (Completer, error) {
	c, err := CompleterFor(cfg, cmp(cfg.Review.Model, cfg.Models.Default), roles)
	if err != nil {
		return nil, fmt.Errorf("review.model: %w", err)
	}
	return c, nil
}

// Planner is the model that plans jobs without tasks: models.default. It
// is nil when none is set.
func Planner(cfg config.Config, roles map[string]Model) (Completer, error) {
	c, err := CompleterFor(cfg, cfg.Models.Default, roles)
	if err != nil {
		return nil, fmt.Errorf("models.default: %w", err)
	}
	return c, nil
}

// CompleterFor returns the model ref names for plain questions, sharing
// its provider's limit with the roles' models; nil for none or "offline".
func CompleterFor(cfg config.Config, ref string, roles map[string]Model) (Completer, error) {
	if ref == "" || ref == "offline" {
		return nil, nil
	}
	spec, err := specOf(cfg, ref)
	if err != nil {
		return nil, err
	}
	provider, _, _ := strings.Cut(ref, "/")
	limiter := make(chan struct{}, max(cfg.Models.Providers[provider].MaxConcurrency, 1))
	for _, m := range roles {
		models := []Model{m}
		if f, ok := m.(*Fallbacks); ok {
			models = f.Models
		}
		for _, m := range models {
			if o, ok := m.(*OpenAI); ok && strings.HasPrefix(o.spec.Ref, provider+"/") {
				limiter = o.limiter
			}
		}
	}
	return NewOpenAI(spec, limiter), nil
}
