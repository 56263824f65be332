package sqlcore

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// The counts below are for the dashboard: aggregates the database computes
// over indexes (see 0002_dashboard.sql), so a page costs a few index scans
// however many jobs there are. Rows that come back grouped by role are
// sorted here, bytewise, because PostgreSQL orders text by the database's
// collation and SQLite bytewise.

// JobCountByStatus counts jobs per status; a status without jobs is absent
// and an empty database gives an empty, non-nil map.
func (q *Queries) JobCountByStatus(ctx context.Context) (map[string]int, error) {
	counts := map[string]int{}
	_, err := queryAll(ctx, q, func(s scanner) (struct{}, error) {
		var (
			status string
			n      int
		)
		if err := s.Scan(&status, &n); err != nil {
			return struct{}{}, err
		}
		counts[status] = n
		return struct{}{}, nil
	}, `SELECT status, count(*) FROM jobs GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("counting jobs by status: %w", err)
	}
	return counts, nil
}

// TaskCountByRoleStatus counts tasks per role and status, ordered by role
// then status; an empty database gives an empty, non-nil slice.
func (q *Queries) TaskCountByRoleStatus(ctx context.Context) ([]store.RoleStatusCount, error) {
	counts, err := queryAll(ctx, q, func(s scanner) (store.RoleStatusCount, error) {
		var c store.RoleStatusCount
		err := s.Scan(&c.Role, &c.Status, &c.Count)
		return c, err
	}, `SELECT role, status, count(*) FROM tasks GROUP BY role, status`)
	if err != nil {
		return nil, fmt.Errorf("counting tasks by role and status: %w", err)
	}
	if counts == nil {
		counts = []store.RoleStatusCount{}
	}
	slices.SortFunc(counts, func(a, b store.RoleStatusCount) int {
		return cmp.Or(cmp.Compare(a.Role, b.Role), cmp.Compare(a.Status, b.Status))
	})
	return counts, nil
}

// OutputCount counts outputs with status ("" any) of role ("" any).
func (q *Queries) OutputCount(ctx context.Context, status, role string) (int, error) {
	var w where
	if status != "" {
		w.add(`status = ?`, status)
	}
	if role != "" {
		w.add(`role = ?`, role)
	}
	var n int
	if err := q.queryRow(ctx, `SELECT count(*) FROM outputs`+w.String(), w.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting outputs: %w", err)
	}
	return n, nil
}

// DeadLetterCount counts dead letters with status ("" any).
func (q *Queries) DeadLetterCount(ctx context.Context, status string) (int, error) {
	var w where
	if status != "" {
		w.add(`status = ?`, status)
	}
	var n int
	if err := q.queryRow(ctx, `SELECT count(*) FROM dead_letters`+w.String(), w.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting dead letters: %w", err)
	}
	return n, nil
}

// roleStatsQuery aggregates tasks, outputs and lessons per role in one
// statement, so the three agree with each other (one snapshot). Sums are
// cast back to BIGINT: PostgreSQL sums BIGINTs as NUMERIC.
const roleStatsQuery = `SELECT t.role, t.tasks, t.done, t.failed, t.cancelled,
	COALESCE(o.promoted, 0), COALESCE(o.first_pass, 0), COALESCE(o.outputs, 0), COALESCE(o.latency_ms, 0),
	COALESCE(l.lessons, 0)
FROM (
	SELECT role, count(*) AS tasks,
		SUM(CASE WHEN status = ? THEN 1 ELSE 0 END) AS done,
		SUM(CASE WHEN status = ? THEN 1 ELSE 0 END) AS failed,
		SUM(CASE WHEN status = ? THEN 1 ELSE 0 END) AS cancelled
	FROM tasks GROUP BY role
) t
LEFT JOIN (
	SELECT role,
		SUM(CASE WHEN status = ? THEN 1 ELSE 0 END) AS promoted,
		SUM(CASE WHEN status = ? AND revision = 0 THEN 1 ELSE 0 END) AS first_pass,
		count(*) AS outputs,
		CAST(SUM(latency_ms) AS BIGINT) AS latency_ms
	FROM outputs GROUP BY role
) o ON o.role = t.role
LEFT JOIN (
	SELECT scope, count(*) AS lessons FROM lessons WHERE created_at >= ? GROUP BY scope
) l ON l.scope = t.role`

// RoleStats summarises each role that has tasks, ordered by role; lessons
// are counted from lessonsSince. Done counts promoted tasks. An empty
// database gives an empty, non-nil slice.
func (q *Queries) RoleStats(ctx context.Context, lessonsSince time.Time) ([]store.RoleStat, error) {
	stats, err := queryAll(ctx, q, func(s scanner) (store.RoleStat, error) {
		var (
			r                  store.RoleStat
			outputs, latencyMS int64
		)
		if err := s.Scan(&r.Role, &r.Tasks, &r.Done, &r.Failed, &r.Cancelled,
			&r.Promoted, &r.FirstPass, &outputs, &latencyMS, &r.Lessons); err != nil {
			return r, err
		}
		// The mean is taken here from an exact sum and count, so both
		// databases give the same float.
		if outputs > 0 {
			r.MeanOutputMS = float64(latencyMS) / float64(outputs)
		}
		return r, nil
	}, roleStatsQuery,
		schemas.TaskPromoted, schemas.TaskFailed, schemas.TaskCancelled,
		schemas.OutputPromoted, schemas.OutputPromoted,
		toMicros(lessonsSince))
	if err != nil {
		return nil, fmt.Errorf("summarising roles: %w", err)
	}
	if stats == nil {
		stats = []store.RoleStat{}
	}
	slices.SortFunc(stats, func(a, b store.RoleStat) int { return cmp.Compare(a.Role, b.Role) })
	return stats, nil
}

// JobsFinished counts jobs done, failed or cancelled, by UpdatedAt, in
// buckets of width bucket from since to the bucket that holds now. The
// database groups the rows (over jobs_status_updated_at); buckets nobody
// finished in are filled in here.
func (q *Queries) JobsFinished(ctx context.Context, since time.Time, bucket time.Duration) ([]store.JobBucket, error) {
	bucket = bucket.Truncate(time.Microsecond)
	if bucket <= 0 {
		return nil, fmt.Errorf("counting finished jobs: bucket %s is not positive", bucket)
	}
	since = since.UTC().Truncate(time.Microsecond)
	end := now()
	buckets := []store.JobBucket{}
	if end.Before(since) {
		return buckets, nil
	}
	n := int64(end.Sub(since)/bucket) + 1
	if n > store.MaxJobBuckets {
		return nil, fmt.Errorf("counting finished jobs: %d buckets of %s since %s, more than %d",
			n, bucket, since.Format(time.RFC3339), store.MaxJobBuckets)
	}
	for i := range n {
		buckets = append(buckets, store.JobBucket{Start: since.Add(time.Duration(i) * bucket)})
	}

	from, width := toMicros(since), bucket.Microseconds()
	_, err := queryAll(ctx, q, func(s scanner) (struct{}, error) {
		var (
			i, count int64
			status   string
		)
		if err := s.Scan(&i, &status, &count); err != nil {
			return struct{}{}, err
		}
		if i < 0 || i >= n {
			return struct{}{}, fmt.Errorf("bucket %d out of range", i)
		}
		b := &buckets[i]
		switch status {
		case schemas.JobDone:
			b.Done += int(count)
		case schemas.JobFailed:
			b.Failed += int(count)
		case schemas.JobCancelled:
			b.Cancelled += int(count)
		}
		return struct{}{}, nil
	}, `SELECT (updated_at - ?) / ?, status, count(*) FROM jobs
		WHERE status IN (?, ?, ?) AND updated_at >= ? AND updated_at < ?
		GROUP BY 1, 2`,
		from, width, schemas.JobDone, schemas.JobFailed, schemas.JobCancelled, from, from+n*width)
	if err != nil {
		return nil, fmt.Errorf("counting finished jobs: %w", err)
	}
	return buckets, nil
}
