package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/store"
)

// With OutboxDirect set, the outbox rows of each committed transaction are
// handed over once, claimed for their owner; those of transactions rolled
// back (alone, or inside a group that committed) never are.
func outboxDirect(t *testing.T, ctx context.Context, st store.Store) {
	s, ok := st.(interface{ SetOutboxDirect(*store.OutboxDirect) })
	if !ok {
		t.Skip("the store cannot hand outbox rows over")
	}
	var mu sync.Mutex
	got := map[string]int{}
	noSeq := 0
	var handed []store.OutboxMessage
	s.SetOutboxDirect(&store.OutboxDirect{
		Owner: "relay-a", Lease: time.Minute,
		Match: func(subject string) bool { return subject != "troupe.tasks.tester" },
		Committed: func(msgs []store.OutboxMessage) {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				if m.Seq <= 0 {
					noSeq++
				}
				got[m.MsgID]++
			}
			handed = append(handed, msgs...)
		},
	})
	var wg sync.WaitGroup
	want := map[string]int{}
	errs := make([]error, 60)
	for i := range 60 {
		id := fmt.Sprintf("m%d", i)
		if i%3 != 0 {
			want[id] = 1
		}
		wg.Go(func() {
			err := st.InTx(ctx, func(q store.Querier) error {
				if err := q.OutboxInsert(ctx, []store.OutboxMessage{
					{Subject: "troupe.review.pm", MsgID: id, Payload: []byte(`{}`)},
					{Subject: "troupe.tasks.tester", MsgID: id + ".other", Payload: []byte(`{}`)},
				}); err != nil {
					return err
				}
				if i%3 == 0 {
					return errors.New("rolled back")
				}
				return nil
			})
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.Equal(t, i%3 == 0, err != nil, "transaction %d: %v", i, err)
	}
	mu.Lock()
	require.Equal(t, want, got)
	require.Zero(t, noSeq, "rows were handed over without their seq")
	mu.Unlock()

	// Another relay's claim takes only the rows not handed over.
	claimed, err := st.OutboxClaim(ctx, store.OutboxClaimParams{Owner: "relay-b", Limit: 1000})
	require.NoError(t, err)
	require.Len(t, claimed, 40)
	for _, m := range claimed {
		require.Equal(t, "troupe.tasks.tester", m.Subject)
	}

	// Each row handed over carries its own seq, also when rows of one
	// transaction share a message id.
	mu.Lock()
	handed = nil
	mu.Unlock()
	require.NoError(t, st.InTx(ctx, func(q store.Querier) error {
		return q.OutboxInsert(ctx, []store.OutboxMessage{
			{Subject: "troupe.review.pm", MsgID: "same", Payload: []byte(`1`)},
			{Subject: "troupe.events.j.a", MsgID: "other", Payload: []byte(`2`)},
			{Subject: "troupe.review.developer", MsgID: "same", Payload: []byte(`3`)},
		})
	}))
	require.NoError(t, st.InTx(ctx, func(q store.Querier) error {
		if err := q.OutboxInsert(ctx, []store.OutboxMessage{
			{Subject: "troupe.review.writer", MsgID: "w1", Payload: []byte(`4`)},
			{Subject: "troupe.events.j.b", MsgID: "w2", Payload: []byte(`5`)},
		}); err != nil {
			return err
		}
		// An event's message, written with the event, is handed over too.
		return q.EventEmit(ctx, []store.Event{{JobID: "j", Kind: "job_done"}},
			[]store.OutboxMessage{{Subject: "troupe.events.j.job_done", MsgID: "e1", Payload: []byte(`6`)}})
	}))
	unsent, err := st.OutboxListUnsent(ctx, 1000)
	require.NoError(t, err)
	bySeq := map[int64]store.OutboxMessage{}
	for _, m := range unsent {
		bySeq[m.Seq] = m
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, handed, 6)
	for _, h := range handed {
		row, ok := bySeq[h.Seq]
		require.True(t, ok, "seq %d of %s is not an unsent row", h.Seq, h.Subject)
		require.Equal(t, row.Subject, h.Subject)
		require.Equal(t, row.MsgID, h.MsgID)
		require.Equal(t, string(row.Payload), string(h.Payload))
	}
}
