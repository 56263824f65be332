package bus

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTrackerRefusesAfterClose: a request counted in before Close is waited
// for; one arriving after Close is refused instead of joining the wait.
func TestTrackerRefusesAfterClose(t *testing.T) {
	t.Parallel()
	var tr Tracker
	require.True(t, tr.enter())
	wg := tr.Close()
	require.False(t, tr.enter(), "closed: new requests are refused")
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("the wait ended while a request was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	tr.leave()
	<-done
}
