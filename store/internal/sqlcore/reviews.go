package sqlcore

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/store"
)

const reviewColumns = `id, output_id, task_id, job_id, decision, reviewer, feedback, checks, lessons, created_at`

func scanReview(s scanner) (store.Review, error) {
	var (
		r               store.Review
		checks, lessons string
		createdAt       int64
	)
	if err := s.Scan(&r.ID, &r.OutputID, &r.TaskID, &r.JobID, &r.Decision, &r.Reviewer, &r.Feedback,
		&checks, &lessons, &createdAt); err != nil {
		return r, err
	}
	if err := fromJSON(checks, &r.Checks); err != nil {
		return r, fmt.Errorf("review %s checks: %w", r.ID, err)
	}
	if err := fromJSON(lessons, &r.Lessons); err != nil {
		return r, fmt.Errorf("review %s lessons: %w", r.ID, err)
	}
	r.CreatedAt = fromMicros(createdAt)
	return r, nil
}

// ReviewInsert records a review decision. It returns ErrNotFound when the
// output does not exist.
func (q *Queries) ReviewInsert(ctx context.Context, r store.Review) error {
	r.ID = orNewID(r.ID)
	r.CreatedAt = orNow(r.CreatedAt)
	checks, err := toJSON(r.Checks)
	if err != nil {
		return fmt.Errorf("inserting review: %w", err)
	}
	lessons, err := toJSON(r.Lessons)
	if err != nil {
		return fmt.Errorf("inserting review: %w", err)
	}
	return q.write(ctx, func(err error) error {
		if q.parentMissing(err) {
			return fmt.Errorf("inserting review: output %s: %w", r.OutputID, store.ErrNotFound)
		}
		return fmt.Errorf("inserting review of output %s: %w", r.OutputID, err)
	}, `INSERT INTO reviews (`+reviewColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.OutputID, r.TaskID, r.JobID, r.Decision, r.Reviewer, r.Feedback, checks, lessons, toMicros(r.CreatedAt))
}

// ReviewListByJob returns a job's reviews, oldest first.
func (q *Queries) ReviewListByJob(ctx context.Context, jobID string) ([]store.Review, error) {
	reviews, err := queryAll(ctx, q, scanReview,
		`SELECT `+reviewColumns+` FROM reviews WHERE job_id = ? ORDER BY created_at, id`, jobID)
	if err != nil {
		return nil, fmt.Errorf("listing reviews of job %s: %w", jobID, err)
	}
	return reviews, nil
}

// ReviewListByOutput returns an output's reviews, oldest first.
func (q *Queries) ReviewListByOutput(ctx context.Context, outputID string) ([]store.Review, error) {
	reviews, err := queryAll(ctx, q, scanReview,
		`SELECT `+reviewColumns+` FROM reviews WHERE output_id = ? ORDER BY created_at, id`, outputID)
	if err != nil {
		return nil, fmt.Errorf("listing reviews of output %s: %w", outputID, err)
	}
	return reviews, nil
}
