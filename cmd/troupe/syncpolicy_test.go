package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/config"
)

// TestSyncPolicy: against a server Troupe did not start, what its sync
// setting means is said at start, and atomic batches follow nats.sync.
func TestSyncPolicy(t *testing.T) {
	t.Parallel()
	off := false
	for _, tt := range []struct {
		name     string
		nats     config.NATS
		warn     bool
		contains []string
	}{
		{"Unknown", config.NATS{}, true, []string{"cannot read", "every 2 minutes", "atomic batches (nats.atomicBatches)", `nats.sync: "periodic"`}},
		{"UnknownBatchesOff", config.NATS{AtomicBatches: &off}, true, []string{"cannot read", "one message at a time"}},
		{"Always", config.NATS{Sync: "always"}, false, []string{"syncs every write", "survives a crash", "atomic batches"}},
		{"Periodic", config.NATS{Sync: "periodic"}, true, []string{"periodically", "can lose", "one message at a time"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			warn, msg := syncPolicy(tt.nats)
			require.Equal(t, tt.warn, warn)
			for _, s := range tt.contains {
				require.Contains(t, msg, s)
			}
		})
	}
}
