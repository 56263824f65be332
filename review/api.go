package review

import (
	"context"
	"errors"
	"fmt"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/secretscan"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// listReviews lists the outputs waiting for a person, oldest first.
func (s *Service) listReviews(ctx context.Context, req schemas.ListRequest) (any, error) {
	p := store.OutputListParams{Status: schemas.OutputAwaitingReview, Role: req.Role, JobID: req.JobID, Limit: clamp(req.Limit, 50, 200)}
	if req.Cursor != "" {
		t, id, err := bus.DecodeCursor(req.Cursor)
		if err != nil {
			return nil, bus.BadRequest("invalid_request", "cursor: %v", err)
		}
		p.After, p.AfterID = t, id
	}
	outs, err := s.store.OutputList(ctx, p)
	if err != nil {
		return nil, err
	}
	list := schemas.ReviewList{Items: make([]schemas.ReviewItem, 0, len(outs))}
	for _, o := range outs {
		item, err := s.item(ctx, o, false)
		if err != nil {
			return nil, err
		}
		list.Items = append(list.Items, item)
	}
	if len(outs) == p.Limit {
		last := outs[len(outs)-1]
		list.NextCursor = bus.EncodeCursor(last.CreatedAt, last.ID)
	}
	return list, nil
}

// getReview shows one output with its task, its checks and the revision it replaces.
func (s *Service) getReview(ctx context.Context, req schemas.IDRequest) (any, error) {
	o, err := s.store.OutputGetByID(ctx, req.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &bus.APIError{Status: 404, Code: "not_found", Message: fmt.Sprintf("id: no output %q", req.ID)}
	}
	if err != nil {
		return nil, err
	}
	return s.item(ctx, o, true)
}

func (s *Service) item(ctx context.Context, o store.Output, full bool) (schemas.ReviewItem, error) {
	t, err := s.store.TaskGetByID(ctx, o.TaskID)
	if err != nil {
		return schemas.ReviewItem{}, err
	}
	j, err := s.store.JobGetByID(ctx, o.JobID)
	if err != nil {
		return schemas.ReviewItem{}, err
	}
	// The checks see the output as it is; a person sees it with every
	// secret masked (a rejected output may hold one).
	limits := s.limits()
	checks := Checks(o, limits)
	out := o.Schema()
	if !full {
		out = out.Summary()
	}
	scanner := secretscan.New(limits.Secrets...)
	out.Content, out.Files = maskOutput(scanner, out.Content, out.Files)
	item := schemas.ReviewItem{Output: out, Task: t.Schema(), JobTitle: j.Title, Checks: checks}
	if full && o.Revision > 0 {
		prev, err := s.store.OutputGetByTaskRevision(ctx, o.TaskID, o.Revision-1)
		if err == nil {
			p := prev.Schema()
			p.Content, p.Files = maskOutput(scanner, p.Content, p.Files)
			p.Prompt = ""
			item.Previous = &p
		} else if !errors.Is(err, store.ErrNotFound) {
			return schemas.ReviewItem{}, err
		}
	}
	return item, nil
}

// listLessons lists MEMORY newest first.
func (s *Service) listLessons(ctx context.Context, req schemas.ListRequest) (any, error) {
	p := store.LessonListParams{Scope: req.Role, IncludeGlobal: req.Role != "", Query: req.Query, Limit: clamp(req.Limit, 100, 500)}
	if req.Cursor != "" {
		t, id, err := bus.DecodeCursor(req.Cursor)
		if err != nil {
			return nil, bus.BadRequest("invalid_request", "cursor: %v", err)
		}
		p.Before, p.BeforeID = t, id
	}
	rows, err := s.store.LessonList(ctx, p)
	if err != nil {
		return nil, err
	}
	list := schemas.LessonList{Lessons: make([]schemas.Lesson, len(rows))}
	for i, l := range rows {
		list.Lessons[i] = l.Schema()
	}
	if len(rows) == p.Limit {
		last := rows[len(rows)-1]
		list.NextCursor = bus.EncodeCursor(last.CreatedAt, last.ID)
	}
	return list, nil
}

func clamp(n, def, maxN int) int {
	if n <= 0 {
		return def
	}
	return min(n, maxN)
}
