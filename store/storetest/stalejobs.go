package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// jobListStale checks that JobListStale pages through every stale job of
// a status, oldest first, without gaps or duplicates, and leaves out the
// ones updated lately and those of other statuses.
func jobListStale(t *testing.T, ctx context.Context, s store.Store) {
	var want []string
	for i := range 23 {
		// Three jobs per instant, so pages split ties.
		status := schemas.JobRunning
		updated := at(i / 3)
		switch i % 7 {
		case 5:
			status = schemas.JobDone
		case 6:
			updated = at(100) // updated lately
		}
		job, _, err := s.JobCreate(ctx, store.JobCreateParams{
			Job: store.Job{Title: fmt.Sprintf("job %02d", i), Status: status, CreatedAt: at(i / 3), UpdatedAt: updated},
		})
		require.NoError(t, err)
		if status == schemas.JobRunning && updated.Before(at(50)) {
			want = append(want, job.ID)
		}
	}
	all, err := s.JobListStale(ctx, store.JobListStaleParams{Status: schemas.JobRunning, UpdatedBefore: at(50), Limit: 100})
	require.NoError(t, err)
	require.Len(t, all, len(want))
	for i := 1; i < len(all); i++ {
		prev, cur := all[i-1], all[i]
		require.True(t, prev.CreatedAt.Before(cur.CreatedAt) || (prev.CreatedAt.Equal(cur.CreatedAt) && prev.ID < cur.ID), "oldest first")
	}

	var got []string
	p := store.JobListStaleParams{Status: schemas.JobRunning, UpdatedBefore: at(50), Limit: 4}
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10, "too many pages")
		page, err := s.JobListStale(ctx, p)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), 4)
		if len(page) == 0 {
			break
		}
		for _, j := range page {
			got = append(got, j.ID)
		}
		last := page[len(page)-1]
		p.After, p.AfterID = last.CreatedAt, last.ID
	}
	require.ElementsMatch(t, want, got)
	require.Len(t, got, len(want), "no duplicates")
	for i, j := range all {
		require.Equal(t, j.ID, got[i], "the pages walk the jobs in order")
	}
}
