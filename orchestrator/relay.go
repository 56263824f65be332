package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/store"
)

// RelayConfig configures the outbox relay.
type RelayConfig struct {
	// Interval between looks at the outbox when nothing woke the relay: it
	// catches rows written by other processes. Defaults to 1s.
	Interval time.Duration
	// Batch is how many rows one pass publishes at once. Defaults to 256.
	Batch int
	// Subjects, when set, are the NATS subject filters of the rows this
	// relay claims: those its NATS user may publish (bus.Subjects'
	// WorkerSubjects, ReviewSubjects). Rows on other subjects are left to
	// another relay; the orchestrator's claims every row, so each row has a
	// relay that may publish it. Defaults to every row.
	Subjects []string
	// StreamOf names the stream a subject is stored in (bus.Topology's
	// StreamOf). With it, rows bound for one stream that allows atomic
	// batches are published as atomic batches: the server writes and syncs
	// a batch once instead of once a message. Without it, every row is
	// published on its own.
	StreamOf func(subject string) string
	// Streams names the stream each subject is meant for (bus.Topology's
	// StreamOf): with it, a row no stream will ever take is told from one
	// whose stream is missing for now (retried until it is back).
	// Defaults to StreamOf.
	Streams func(subject string) string
	// DeadLetters, when set, records the rows that can never be published
	// (larger than the server's max payload or their stream's message
	// limit, on a subject no stream takes or this NATS user may not
	// publish): on their MaxAttempts-th failure they are dead-lettered
	// with the reason (source "outbox") and deleted. Failures that may
	// pass (NATS away, a stream missing) are retried for ever; so is
	// every failure without DeadLetters.
	DeadLetters *DeadLetters
	// MaxAttempts is how many publishes of a row that can never be
	// published are tried. Defaults to DefaultOutboxMaxAttempts (5).
	MaxAttempts int
	Logger      zerolog.Logger
}

// Relay publishes the outbox: messages written in the same transaction as
// the change they announce, each with the message id fixed when the row was
// written, so a crash between commit and publish loses nothing and a
// publish repeated after one is deduplicated by the stream.
type Relay struct {
	cfg   RelayConfig
	store store.Store
	js    jetstream.JetStream
	wake  chan struct{}
	stop  context.CancelFunc
	done  chan struct{}
	once  sync.Once
	owner string

	// atomic caches, per stream, whether it takes atomic batches.
	atomicMu sync.Mutex
	atomic   map[string]atomicCheck

	// direct holds rows handed over at commit (Direct), to publish next;
	// dropped says some did not fit.
	directMu  sync.Mutex
	direct    []store.OutboxMessage
	dropped   bool
	directMax int
	// lastPass is when Flush last claimed (Flush runs one at a time).
	lastPass time.Time
	// unmarked are rows handed over at commit, published, not yet deleted
	// from the outbox (since unmarkedSince): deleted together, every
	// markEvery.
	unmarked      []int64
	unmarkedSince time.Time
}

// Rows handed over at commit wait in memory for the relay; past
// directMax of them, more are left in the outbox, claimed by this relay,
// and its next pass takes them back (OutboxClaimParams.Reclaim).
const (
	directMax   = 20000
	directLease = 30 * time.Second
	// passEvery: while rows handed over keep coming, a pass still runs
	// this often.
	passEvery = 200 * time.Millisecond
	// markEvery: rows handed over and published are deleted from the
	// outbox together, this long after the first of them (or at markBatch
	// rows), not one transaction per commit. Until then they stay claimed
	// by this relay; if it dies first, they are published again when the
	// claim ends and the stream drops them by their ids.
	markEvery = 50 * time.Millisecond
	markBatch = 1000
)

type atomicCheck struct {
	ok bool
	at time.Time
}

// NewRelay returns a relay; Start runs it.
func NewRelay(cfg RelayConfig, st store.Store, js jetstream.JetStream) *Relay {
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Batch == 0 {
		cfg.Batch = 256
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultOutboxMaxAttempts
	}
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s/%d/%s", host, os.Getpid(), uuid.NewString()[:8])
	return &Relay{
		cfg: cfg, store: st, js: js, wake: make(chan struct{}, 1), done: make(chan struct{}), owner: owner,
		atomic: map[string]atomicCheck{}, directMax: directMax,
	}
}

// Direct is what the store needs (store.OutboxDirect) to hand this relay
// the outbox rows of each transaction as it commits: they are published at
// once instead of on the relay's next pass, and no pass needs to claim
// them. Only rows on this relay's subjects are handed over.
func (r *Relay) Direct() *store.OutboxDirect {
	var match func(string) bool
	if len(r.cfg.Subjects) > 0 {
		filters := r.cfg.Subjects
		match = func(subject string) bool {
			for _, f := range filters {
				if bus.SubjectMatches(f, subject) {
					return true
				}
			}
			return false
		}
	}
	return &store.OutboxDirect{Owner: r.owner, Lease: directLease, Match: match, Committed: r.committed}
}

func (r *Relay) committed(msgs []store.OutboxMessage) {
	r.directMu.Lock()
	room := max(0, r.directMax-len(r.direct))
	r.direct = append(r.direct, msgs[:min(room, len(msgs))]...)
	first := false
	if room < len(msgs) {
		first, r.dropped = !r.dropped, true
	}
	r.directMu.Unlock()
	if first {
		r.cfg.Logger.Info().Int("waiting", r.directMax).Msg("outbox rows arrive faster than they are published; the rest wait in the outbox for the relay's next pass")
	}
	r.Notify()
}

// takeDirect takes up to n of the rows handed over at commit.
func (r *Relay) takeDirect(n int) []store.OutboxMessage {
	r.directMu.Lock()
	defer r.directMu.Unlock()
	n = min(n, len(r.direct))
	if n == 0 {
		return nil
	}
	out := slices.Clone(r.direct[:n])
	r.direct = slices.Delete(r.direct, 0, n)
	return out
}

// Notify wakes the relay: call it after committing outbox rows.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start runs the relay until Stop.
func (r *Relay) Start(ctx context.Context) {
	ctx, r.stop = context.WithCancel(context.WithoutCancel(ctx))
	go r.run(ctx)
}

// Stop stops the relay, then publishes what is left within ctx.
func (r *Relay) Stop(ctx context.Context) {
	r.once.Do(func() {
		if r.stop == nil {
			return
		}
		r.stop()
		<-r.done
		if _, err := r.Flush(ctx); err != nil {
			r.cfg.Logger.Warn().Err(err).Msg("outbox rows left unsent at stop; the next relay sends them")
		}
	})
}

func (r *Relay) run(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	mark := time.NewTimer(markEvery)
	mark.Stop()
	full := true
	for {
		if _, err := r.flush(ctx, full); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn().Err(err).Msg("outbox relay; trying again shortly")
		}
		if len(r.unmarked) > 0 {
			mark.Reset(max(0, markEvery-time.Since(r.unmarkedSince)))
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			full = false
		case <-t.C:
			full = true
		case <-mark.C:
			if err := r.markSent(ctx, true); err != nil && ctx.Err() == nil {
				r.cfg.Logger.Warn().Err(err).Msg("outbox relay; trying again shortly")
			}
			full = false
		}
		mark.Stop()
	}
}

// Flush publishes every due outbox row and reports how many it sent. Rows
// are claimed first, so relays in other processes do not publish them at
// the same time; a row that fails is retried later with a growing delay,
// without holding up the rows behind it.
//
// Rows handed over at commit (Direct) go first: they are claimed already.
func (r *Relay) Flush(ctx context.Context) (int, error) { return r.flush(ctx, true) }

// flush is Flush; without full, a pass is left out when one ran within
// passEvery (woken by a commit, the rows handed over are what is new), and
// the rows handed over are deleted from the outbox only once markEvery or
// markBatch says so.
func (r *Relay) flush(ctx context.Context, full bool) (int, error) {
	sent, err := r.flushRows(ctx, full)
	if merr := r.markSent(ctx, full); err == nil {
		err = merr
	}
	return sent, err
}

// markSent records the rows published and not yet recorded, by deleting
// them from the outbox, when now says so or they are due.
func (r *Relay) markSent(ctx context.Context, now bool) error {
	if len(r.unmarked) == 0 {
		return nil
	}
	if !now && len(r.unmarked) < markBatch && time.Since(r.unmarkedSince) < markEvery {
		return nil
	}
	if err := r.store.OutboxDeleteSent(context.WithoutCancel(ctx), r.unmarked); err != nil {
		// Again in a second, not at once: the store may be away.
		r.unmarkedSince = time.Now().Add(time.Second - markEvery)
		return fmt.Errorf("deleting sent outbox rows: %w", err)
	}
	r.unmarked = r.unmarked[:0]
	return nil
}

func (r *Relay) flushRows(ctx context.Context, full bool) (int, error) {
	sent := 0
	// Rows that did not fit in memory are in the outbox, claimed by this
	// relay: its passes take them back. (Rows handed over meanwhile may be
	// taken too, and published twice; the stream drops the second by its
	// id.)
	r.directMu.Lock()
	reclaim := r.dropped
	r.dropped = false
	r.directMu.Unlock()
	defer func() {
		if reclaim { // not all taken back: next time
			r.directMu.Lock()
			r.dropped = true
			r.directMu.Unlock()
		}
	}()
	// The rows handed over first, with a pass at least every passEvery:
	// a steady stream of commits does not hold up the rows only a pass
	// finds (other processes', those due again, those taken back).
	for {
		direct := r.takeDirect(r.cfg.Batch)
		if len(direct) > 0 {
			n, err := r.settle(ctx, direct, true)
			sent += n
			if err != nil {
				// The rows not marked are still claimed, or were marked
				// failed: a pass takes them when their lease or delay ends.
				return sent, err
			}
			// Commits that keep coming keep this loop going: mark as due.
			if err := r.markSent(ctx, false); err != nil {
				return sent, err
			}
		}
		if !full && !reclaim && time.Since(r.lastPass) < passEvery {
			if len(direct) > 0 {
				continue
			}
			return sent, nil
		}
		r.lastPass = time.Now()
		if reclaim {
			// Taking back its own rows, the pass would take those
			// published and not yet marked too.
			if err := r.markSent(ctx, true); err != nil {
				return sent, err
			}
		}
		claimed, err := r.store.OutboxClaim(ctx, store.OutboxClaimParams{Owner: r.owner, Limit: r.cfg.Batch, Lease: directLease, Subjects: r.cfg.Subjects, Reclaim: reclaim})
		if err != nil {
			return sent, fmt.Errorf("claiming the outbox: %w", err)
		}
		if len(claimed) > 0 {
			n, err := r.settle(ctx, claimed, false)
			sent += n
			if err != nil {
				return sent, err
			}
			full = true // passes go on while they find rows
		} else {
			reclaim, full = false, false // all taken back; nothing due
			if len(direct) == 0 {
				return sent, nil
			}
		}
	}
}

// settle publishes claimed rows and records the outcome of each: sent (at
// once, or, later, with others by markSent), or failed and due again after
// a growing delay. It returns how many were sent, and an error when none
// was (wait before trying again) or the outcome could not be recorded.
func (r *Relay) settle(ctx context.Context, msgs []store.OutboxMessage, later bool) (int, error) {
	ok, failed := r.publish(ctx, msgs)
	switch {
	case len(ok) == 0:
	case later:
		// Deleted with others soon (markSent); claimed by this relay
		// until then.
		if len(r.unmarked) == 0 {
			r.unmarkedSince = time.Now()
		}
		r.unmarked = append(r.unmarked, ok...)
	default:
		if err := r.store.OutboxDeleteSent(context.WithoutCancel(ctx), ok); err != nil {
			return 0, fmt.Errorf("deleting sent outbox rows: %w", err)
		}
	}
	var firstErr error
	streams := map[string]bool{} // whether a stream exists, asked once a pass
	for _, f := range failed {
		var why string
		if r.cfg.DeadLetters != nil && f.msg.Attempts+1 >= r.cfg.MaxAttempts {
			why = r.permanentFailure(ctx, f.msg, f.err, streams)
		}
		if why != "" {
			if _, err := r.deadLetter(ctx, f.msg, why, f.err, f.msg.Attempts+1); err != nil {
				return len(ok), fmt.Errorf("dead-lettering an outbox row: %w", err)
			}
			continue
		}
		delay := min(time.Second<<min(f.msg.Attempts, 6), time.Minute)
		attempts, err := r.store.OutboxMarkFailed(context.WithoutCancel(ctx), f.msg.Seq, f.err.Error(), time.Now().Add(delay))
		if errors.Is(err, store.ErrNotFound) {
			continue // sent meanwhile, by a relay that took it over
		}
		if err != nil {
			return len(ok), fmt.Errorf("recording an outbox failure: %w", err)
		}
		log := r.cfg.Logger.Warn()
		if attempts >= 10 {
			log = r.cfg.Logger.Error()
		}
		log.Err(f.err).Str("subject", f.msg.Subject).Int64("seq", f.msg.Seq).Int("attempts", attempts).Dur("retry_in", delay).Msg("outbox publish failed")
		if firstErr == nil {
			firstErr = f.err
		}
	}
	if len(ok) == 0 && firstErr != nil {
		return 0, firstErr // nothing went through: wait before trying again
	}
	return len(ok), nil
}

type failedPublish struct {
	msg store.OutboxMessage
	err error
}

// Atomic batches: the server stages a batch's messages and then writes them
// with one sync, where a message published alone is synced alone. Staging
// costs about as much as a dozen single publishes (on this project's test
// machine: 2.7 ms a batch against 0.2 ms a message), so short runs are
// published one by one. A batch holds at most 1,000 messages, the server's
// default limit.
const (
	atomicMin = 16
	atomicMax = 1000
	// atomicRecheck is how long a stream's answer is kept: a stream
	// updated by a newer Troupe, or a server upgraded, is noticed.
	atomicRecheck = time.Minute
)

// publish publishes msgs asynchronously and waits for every ack: rows bound
// for a stream that takes atomic batches in batches when there are enough
// of them, the rest one by one. A batch the server refuses (a message in it
// already stored, too many batches in flight, a server without atomic
// batches) is published again message by message, so each row's outcome is
// its own.
func (r *Relay) publish(ctx context.Context, msgs []store.OutboxMessage) (ok []int64, failed []failedPublish) {
	var batches [][]store.OutboxMessage
	single := msgs
	if r.cfg.StreamOf != nil {
		single = nil
		byStream := map[string][]store.OutboxMessage{}
		var order []string
		for _, m := range msgs {
			st := r.cfg.StreamOf(m.Subject)
			if _, seen := byStream[st]; !seen {
				order = append(order, st)
			}
			byStream[st] = append(byStream[st], m)
		}
		for _, st := range order {
			group := byStream[st]
			if st == "" || len(group) < atomicMin || !r.takesAtomic(ctx, st) {
				single = append(single, group...)
				continue
			}
			for len(group) > 0 {
				n := min(len(group), atomicMax)
				batches = append(batches, group[:n])
				group = group[n:]
			}
		}
	}

	// Acks are awaited even when ctx ends (the relay stopping): a message
	// sent is as good as published, and is not to be marked failed.
	wait, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	commits := make([]jetstream.PubAckFuture, len(batches))
	for i, b := range batches {
		f, err := r.publishBatch(b)
		if err != nil {
			r.cfg.Logger.Debug().Err(err).Int("messages", len(b)).Msg("atomic batch not sent; publishing its messages one by one")
			single = append(single, b...)
			continue
		}
		commits[i] = f
	}
	futures := r.publishEach(single, &failed)
	for i, f := range commits {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			for _, m := range batches[i] {
				ok = append(ok, m.Seq)
			}
			continue
		case err := <-f.Err():
			r.cfg.Logger.Debug().Err(err).Int("messages", len(batches[i])).Msg("atomic batch refused; publishing its messages one by one")
		case <-wait.Done():
			r.cfg.Logger.Debug().Int("messages", len(batches[i])).Msg("no ack for an atomic batch within 10s; publishing its messages one by one")
		}
		// Nothing of a refused batch was stored; one that went unanswered
		// may have been, and its messages' ids make the stream drop them.
		futures = append(futures, r.publishEach(batches[i], &failed)...)
	}
	for _, f := range futures {
		select {
		case <-f.future.Ok():
			ok = append(ok, f.msg.Seq)
		case err := <-f.future.Err():
			failed = append(failed, failedPublish{f.msg, err})
		case <-wait.Done():
			failed = append(failed, failedPublish{f.msg, errNoAck})
		}
	}
	return ok, failed
}

type pendingPublish struct {
	msg    store.OutboxMessage
	future jetstream.PubAckFuture
}

// publishEach publishes each message on its own, asynchronously; those
// that cannot be sent go to failed.
func (r *Relay) publishEach(msgs []store.OutboxMessage, failed *[]failedPublish) []pendingPublish {
	out := make([]pendingPublish, 0, len(msgs))
	for _, m := range msgs {
		f, err := r.js.PublishMsgAsync(bus.NewMsg(m.Subject, m.MsgID, m.Payload, m.Headers))
		if err != nil {
			*failed = append(*failed, failedPublish{m, err})
			continue
		}
		out = append(out, pendingPublish{m, f})
	}
	return out
}

// publishBatch publishes msgs, all bound for one stream, as one atomic
// batch: the server stores all of them or none. The returned future is the
// commit's ack.
func (r *Relay) publishBatch(msgs []store.OutboxMessage) (jetstream.PubAckFuture, error) {
	id := uuid.NewString()
	nc := r.js.Conn()
	for i, m := range msgs {
		msg := bus.NewMsg(m.Subject, m.MsgID, m.Payload, m.Headers)
		msg.Header.Set(headerBatchID, id)
		msg.Header.Set(headerBatchSeq, strconv.Itoa(i+1))
		if i == len(msgs)-1 {
			msg.Header.Set(headerBatchCommit, "1")
			return r.js.PublishMsgAsync(msg)
		}
		if err := nc.PublishMsg(msg); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("an empty batch")
}

// The headers of JetStream's atomic batch publish (nats-server 2.12).
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
)

// takesAtomic reports whether stream allows atomic batches, as its
// configuration said within the last minute. A server older than 2.12 does
// not report the setting, and is published to message by message.
func (r *Relay) takesAtomic(ctx context.Context, stream string) bool {
	r.atomicMu.Lock()
	c, seen := r.atomic[stream]
	r.atomicMu.Unlock()
	if seen && time.Since(c.at) < atomicRecheck {
		return c.ok
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ok, at := false, time.Now()
	if s, err := r.js.Stream(ctx, stream); err != nil {
		r.cfg.Logger.Debug().Err(err).Str("stream", stream).Msg("reading the stream's configuration; publishing one by one")
		at = at.Add(5*time.Second - atomicRecheck) // ask again soon
	} else {
		ok = s.CachedInfo().Config.AllowAtomicPublish
	}
	r.atomicMu.Lock()
	r.atomic[stream] = atomicCheck{ok: ok, at: at}
	r.atomicMu.Unlock()
	return ok
}
