package sqlcore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/troupe-dev/troupe/store"
)

// outboxColumns are what scanOutboxMessage reads.
const outboxColumns = `seq, subject, msg_id, payload, headers, created_at, attempts, last_error, next_attempt_at`

func scanOutboxMessage(s scanner) (store.OutboxMessage, error) {
	var (
		m             store.OutboxMessage
		headers       string
		createdAt     int64
		nextAttemptAt int64
	)
	if err := s.Scan(&m.Seq, &m.Subject, &m.MsgID, &m.Payload, &headers, &createdAt,
		&m.Attempts, &m.LastError, &nextAttemptAt); err != nil {
		return m, err
	}
	if err := fromJSON(headers, &m.Headers); err != nil {
		return m, fmt.Errorf("outbox message %d headers: %w", m.Seq, err)
	}
	m.CreatedAt = fromMicros(createdAt)
	if nextAttemptAt != 0 {
		m.NextAttemptAt = fromMicros(nextAttemptAt)
	}
	return m, nil
}

// OutboxInsert adds messages to publish, all or none. Seq is assigned by
// the store (msgs[i].Seq is ignored); a message without a MsgID gets one.
func (q *Queries) OutboxInsert(ctx context.Context, msgs []store.OutboxMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	err := q.inTx(ctx, func(q *Queries) error {
		for _, m := range msgs {
			if err := q.outboxInsertOne(ctx, m, "", nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("inserting outbox messages: %w", err)
	}
	return nil
}

// outboxInsertOne inserts one message inside a transaction, in a statement
// that begins with with (a WITH clause taking withArgs, or "").
func (q *Queries) outboxInsertOne(ctx context.Context, m store.OutboxMessage, with string, withArgs []any) error {
	headers, err := toJSON(m.Headers)
	if err != nil {
		return fmt.Errorf("message on %s: %w", m.Subject, err)
	}
	if m.Payload == nil {
		m.Payload = []byte{} // NOT NULL
	}
	m.MsgID, m.CreatedAt = orNewID(m.MsgID), orNow(m.CreatedAt)
	d := q.direct
	if d == nil || q.committed == nil || (d.Match != nil && !d.Match(m.Subject)) {
		return q.write(ctx, nil, with+`INSERT INTO outbox (subject, msg_id, payload, headers, created_at)
			VALUES (?, ?, ?, ?, ?)`,
			append(withArgs, m.Subject, m.MsgID, m.Payload, headers, toMicros(m.CreatedAt))...)
	}
	// Claimed for the relay that publishes it once this commits.
	m.Attempts, m.LastError, m.NextAttemptAt = 0, "", time.Time{}
	query := with + `INSERT INTO outbox (subject, msg_id, payload, headers, created_at, claimed_by, claimed_until)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq`
	args := append(withArgs, m.Subject, m.MsgID, m.Payload, headers, toMicros(m.CreatedAt), d.Owner, toMicros(now().Add(d.Lease)))
	committed := q.committed
	if _, held := q.db.(Deferrer); !held {
		// Run now: the row joins the ones handed over once written.
		return q.writeReturning(ctx, func(row Row) error {
			if err := row.Scan(&m.Seq); err != nil {
				return err
			}
			*committed = append(*committed, m)
			return nil
		}, nil, query, args...)
	}
	// Held back: its seq is known once the statement has run, at a later
	// statement or the commit, and it may run more than once (a group of
	// PostgreSQL transactions sent again one by one), each time setting
	// it again. A failed statement fails the transaction, and the rows
	// gathered with it.
	i := len(*committed)
	*committed = append(*committed, m)
	return q.writeReturning(ctx, func(row Row) error {
		return row.Scan(&(*committed)[i].Seq)
	}, nil, query, args...)
}

// OutboxListUnsent returns up to limit (100 when not positive) unsent
// messages in Seq order.
func (q *Queries) OutboxListUnsent(ctx context.Context, limit int) ([]store.OutboxMessage, error) {
	msgs, err := queryAll(ctx, q, scanOutboxMessage,
		`SELECT `+outboxColumns+` FROM outbox
		WHERE sent_at IS NULL ORDER BY seq LIMIT ?`, limitOr(limit, 100))
	if err != nil {
		return nil, fmt.Errorf("listing unsent outbox messages: %w", err)
	}
	return msgs, nil
}

// OutboxDeleteSent removes messages that were published: a row sent has
// nothing left to do (a publish repeated after a crash is deduplicated by
// the stream, by the message id, not by the row), and deleting it writes
// less than marking it would, and keeps the table the size of what is in
// flight. Seqs that do not exist are ignored.
func (q *Queries) OutboxDeleteSent(ctx context.Context, seqs []int64) error {
	const batch = 500 // well under every driver's limit on parameters
	for len(seqs) > 0 {
		n := min(len(seqs), batch)
		if _, err := q.exec(ctx, `DELETE FROM outbox WHERE seq IN (`+placeholders(n)+`)`, anys(seqs[:n])...); err != nil {
			return fmt.Errorf("deleting sent outbox messages: %w", err)
		}
		seqs = seqs[n:]
	}
	return nil
}

// OutboxClaim claims up to p.Limit (100 when not positive) due, unclaimed
// messages in Seq order for p.Owner, for p.Lease (30s when not positive).
//
// It is one statement. The rows are picked in a materialised CTE, so they
// are picked once: PostgreSQL may otherwise run an IN (subquery … LIMIT)
// again for each row it updates, and a subquery that skips locked rows
// need not give the same rows twice. On PostgreSQL the pick locks the rows
// and skips those another relay is claiming (SKIP LOCKED); a row whose
// claim was committed meanwhile is checked again and dropped. On SQLite the
// statement holds the write lock throughout.
func (q *Queries) OutboxClaim(ctx context.Context, p store.OutboxClaimParams) ([]store.OutboxMessage, error) {
	if p.Owner == "" {
		return nil, errors.New("claiming outbox messages: no owner")
	}
	lease := p.Lease
	if lease <= 0 {
		lease = 30 * time.Second
	}
	t := now()
	var w where
	if p.Reclaim {
		w.add(`sent_at IS NULL AND next_attempt_at <= ? AND (claimed_until < ? OR claimed_by = ?)`, toMicros(t), toMicros(t), p.Owner)
	} else {
		w.add(`sent_at IS NULL AND next_attempt_at <= ? AND claimed_until < ?`, toMicros(t), toMicros(t))
	}
	if len(p.Subjects) > 0 {
		cond, args, err := subjectsMatch(p.Subjects)
		if err != nil {
			return nil, fmt.Errorf("claiming outbox messages: %w", err)
		}
		w.add(cond, args...)
	}
	args := append(w.args, limitOr(p.Limit, 100), p.Owner, toMicros(t.Add(lease)))
	var msgs []store.OutboxMessage
	// A write: in a transaction (on SQLite, one of group commit's).
	err := q.inTx(ctx, func(q *Queries) error {
		var err error
		msgs, err = queryAll(ctx, q, scanOutboxMessage,
			`WITH due AS MATERIALIZED (
				SELECT seq FROM outbox`+w.String()+`
				ORDER BY seq LIMIT ?`+q.dialect.SkipLocked()+`
			)
			UPDATE outbox SET claimed_by = ?, claimed_until = ?
			WHERE seq IN (SELECT seq FROM due)
			RETURNING `+outboxColumns,
			args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claiming outbox messages: %w", err)
	}
	// RETURNING follows no ORDER BY.
	slices.SortFunc(msgs, func(a, b store.OutboxMessage) int { return cmp.Compare(a.Seq, b.Seq) })
	return msgs, nil
}

// subjectsMatch returns the condition that a row's subject matches one of
// the NATS subject filters, and its arguments.
//
// A filter without wildcards is an equality. Otherwise the subject must
// have as many dots as the filter (at least as many with a last ">"),
// which pins every wildcard to whole tokens; LIKE, with "_%" for each
// wildcard, makes those tokens non-empty; and the literal tokens before the
// first wildcard and after the last are compared with substr, because
// SQLite's LIKE ignores case and subjects do not.
func subjectsMatch(filters []string) (string, []any, error) {
	var conds []string
	var args []any
	like := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	for _, f := range filters {
		tokens := strings.Split(f, ".")
		first, last := -1, -1
		for i, tok := range tokens {
			switch {
			case tok == "":
				return "", nil, fmt.Errorf("subject filter %q has an empty token", f)
			case tok == ">" && i != len(tokens)-1:
				return "", nil, fmt.Errorf("subject filter %q: \">\" must be the last token", f)
			case tok == "*" || tok == ">":
				if first < 0 {
					first = i
				}
				last = i
			}
		}
		if first < 0 {
			conds = append(conds, `subject = ?`)
			args = append(args, f)
			continue
		}
		for _, tok := range tokens[first:last] {
			if tok != "*" {
				return "", nil, fmt.Errorf("subject filter %q: a literal token between two wildcards is not supported", f)
			}
		}
		pattern := make([]string, len(tokens))
		for i, tok := range tokens {
			if tok == "*" || tok == ">" {
				pattern[i] = "_%"
			} else {
				pattern[i] = like.Replace(tok)
			}
		}
		dots := `length(subject) - length(replace(subject, '.', ''))`
		op := " = ?"
		if tokens[len(tokens)-1] == ">" {
			op = " >= ?"
		}
		cond := `subject LIKE ? ESCAPE '\' AND ` + dots + op
		cargs := []any{strings.Join(pattern, "."), len(tokens) - 1}
		if first > 0 {
			prefix := strings.Join(tokens[:first], ".") + "."
			cond += ` AND substr(subject, 1, ?) = ?`
			cargs = append(cargs, utf8.RuneCountInString(prefix), prefix)
		}
		if last < len(tokens)-1 {
			suffix := "." + strings.Join(tokens[last+1:], ".")
			cond += ` AND substr(subject, length(subject) - ? + 1) = ?`
			cargs = append(cargs, utf8.RuneCountInString(suffix), suffix)
		}
		conds = append(conds, "("+cond+")")
		args = append(args, cargs...)
	}
	return "(" + strings.Join(conds, " OR ") + ")", args, nil
}

// maxLastError bounds OutboxMessage.LastError, in bytes.
const maxLastError = 2000

// OutboxMarkFailed records a failed publish of message seq: attempts goes
// up by one, last_error (cut to 2000 bytes) and next_attempt_at (zero: at
// once) are set, and the claim is released. It returns the new attempt
// count, or ErrNotFound when there is no such unsent message (another
// relay may have sent it meanwhile).
func (q *Queries) OutboxMarkFailed(ctx context.Context, seq int64, lastError string, nextAttempt time.Time) (int, error) {
	var next int64
	if !nextAttempt.IsZero() {
		next = toMicros(nextAttempt)
	}
	var attempts int
	// A write: in a transaction (on SQLite, one of group commit's).
	err := q.inTx(ctx, func(q *Queries) error {
		return q.queryRow(ctx, `UPDATE outbox
			SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, claimed_by = '', claimed_until = 0
			WHERE seq = ? AND sent_at IS NULL RETURNING attempts`,
			cleanError(lastError), next, seq).Scan(&attempts)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("marking outbox message %d failed: %w", seq, store.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("marking outbox message %d failed: %w", seq, err)
	}
	return attempts, nil
}

// cleanError makes an error message fit a TEXT column: valid UTF-8 without
// NUL (PostgreSQL refuses both), at most maxLastError bytes, cut between
// characters.
func cleanError(s string) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if len(s) <= maxLastError {
		return s
	}
	i := maxLastError
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
