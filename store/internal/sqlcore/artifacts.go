package sqlcore

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/store"
)

const artifactColumns = `id, path, version, job_id, task_id, output_id, role, size, created_at`

// scanArtifact scans artifactColumns, then content when withContent.
func scanArtifact(withContent bool) func(scanner) (store.Artifact, error) {
	return func(s scanner) (store.Artifact, error) {
		var (
			a         store.Artifact
			createdAt int64
		)
		dest := []any{&a.ID, &a.Path, &a.Version, &a.JobID, &a.TaskID, &a.OutputID, &a.Role, &a.Size, &createdAt}
		if withContent {
			dest = append(dest, &a.Content)
		}
		if err := s.Scan(dest...); err != nil {
			return a, err
		}
		a.CreatedAt = fromMicros(createdAt)
		return a, nil
	}
}

// ArtifactInsert adds a version of a path, one more than the path's newest
// (1 for a new path), and returns the row with its version set. a.Version
// is ignored.
func (q *Queries) ArtifactInsert(ctx context.Context, a store.Artifact) (store.Artifact, error) {
	err := q.artifactAdd(ctx, &a, func(tx *Queries, query string, args []any) error {
		return tx.queryRow(ctx, query+` RETURNING version`, args...).Scan(&a.Version)
	})
	if err != nil {
		return store.Artifact{}, err
	}
	return a, nil
}

// ArtifactAdd adds a version of a path as ArtifactInsert does, without
// telling which: inside a transaction it may go with the next statement.
func (q *Queries) ArtifactAdd(ctx context.Context, a store.Artifact) error {
	return q.artifactAdd(ctx, &a, func(tx *Queries, query string, args []any) error {
		return tx.write(ctx, nil, query, args...)
	})
}

// artifactAdd fills in a's ID and time and runs insert with the statement
// that adds it, in a transaction that holds the path's lock.
func (q *Queries) artifactAdd(ctx context.Context, a *store.Artifact, insert func(tx *Queries, query string, args []any) error) error {
	a.ID = orNewID(a.ID)
	a.CreatedAt = orNow(a.CreatedAt)
	err := q.inTx(ctx, func(tx *Queries) error {
		// Writers of one path take turns, so each reads the version the
		// previous one wrote; the unique (path, version) is the backstop.
		if err := tx.dialect.LockXact(ctx, tx.db, "troupe.artifact:"+a.Path); err != nil {
			return fmt.Errorf("locking path: %w", err)
		}
		return insert(tx, `INSERT INTO artifacts (`+artifactColumns+`, content)
			SELECT ?, ?, COALESCE(MAX(version), 0) + 1, ?, ?, ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), ?
			FROM artifacts WHERE path = ?`,
			[]any{a.ID, a.Path, a.JobID, a.TaskID, a.OutputID, a.Role, a.Size, toMicros(a.CreatedAt), a.Content, a.Path})
	})
	if err != nil {
		return fmt.Errorf("inserting artifact %s: %w", a.Path, err)
	}
	return nil
}

// ArtifactList returns, for every path that starts with p.Prefix, its newest
// version (its newest written by job p.JobID when set), ordered by path,
// without content, one page at a time.
func (q *Queries) ArtifactList(ctx context.Context, p store.ArtifactListParams) ([]store.Artifact, error) {
	var w, newest where
	if p.Prefix != "" {
		// Not LIKE: SQLite's LIKE ignores case, and paths do not.
		w.add(`substr(a.path, 1, length(CAST(? AS TEXT))) = ?`, p.Prefix, p.Prefix)
	}
	if p.AfterPath != "" {
		w.add(`a.path > ?`, p.AfterPath)
	}
	newest.add(`n.path = a.path`)
	if p.JobID != "" {
		w.add(`a.job_id = ?`, p.JobID)
		newest.add(`n.job_id = ?`, p.JobID)
	}
	w.add(`a.version = (SELECT MAX(n.version) FROM artifacts n`+newest.String()+`)`, newest.args...)
	args := append(w.args, limitOr(p.Limit, 100))
	artifacts, err := queryAll(ctx, q, scanArtifact(false),
		`SELECT `+prefixed("a.", artifactColumns)+` FROM artifacts a`+w.String()+` ORDER BY a.path LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing artifacts: %w", err)
	}
	return artifacts, nil
}

// ArtifactGet returns one version of a path with its content (the newest
// when version is 0), or ErrNotFound.
func (q *Queries) ArtifactGet(ctx context.Context, path string, version int) (store.Artifact, error) {
	query := `SELECT ` + artifactColumns + `, content FROM artifacts WHERE path = ? AND version = ?`
	args := []any{path, version}
	if version == 0 {
		query = `SELECT ` + artifactColumns + `, content FROM artifacts WHERE path = ? ORDER BY version DESC LIMIT 1`
		args = args[:1]
	}
	a, err := queryOne(ctx, q, scanArtifact(true), query, args...)
	if err != nil {
		return store.Artifact{}, fmt.Errorf("getting artifact %s version %d: %w", path, version, err)
	}
	return a, nil
}

// ArtifactListByTask returns the newest version of each path promoted from
// a task, with content, ordered by path.
func (q *Queries) ArtifactListByTask(ctx context.Context, taskID string) ([]store.Artifact, error) {
	artifacts, err := queryAll(ctx, q, scanArtifact(true),
		`SELECT `+prefixed("a.", artifactColumns)+`, a.content FROM artifacts a
		WHERE a.task_id = ?
		AND a.version = (SELECT MAX(n.version) FROM artifacts n WHERE n.path = a.path AND n.task_id = ?)
		ORDER BY a.path`, taskID, taskID)
	if err != nil {
		return nil, fmt.Errorf("listing artifacts of task %s: %w", taskID, err)
	}
	return artifacts, nil
}
