package main

import (
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/config"
)

// syncPolicy says, for a NATS server Troupe did not start, what its disk
// sync means for messages and for the relays' atomic batches. A client
// cannot read a server's jetstream sync_interval, so nats.sync declares it;
// unset, nats-server's own default (a sync every 2 minutes) may be in
// force. It returns whether to warn, and what to say.
func syncPolicy(n config.NATS) (warn bool, msg string) {
	batches := "the relays publish in atomic batches (nats.atomicBatches), which pay only where the server syncs every write"
	if !n.UseAtomicBatches() {
		batches = "the relays publish one message at a time (nats.atomicBatches is false)"
	}
	switch n.Sync {
	case "always":
		return false, "nats.sync says the NATS server syncs every write to disk (jetstream sync_interval: always): an acknowledged message survives a crash of its host; " + batches
	case "periodic":
		return true, "nats.sync says the NATS server syncs to disk periodically (nats-server's default sync_interval is 2 minutes): a crash of its host (not of the process) can lose the messages acknowledged since the last sync; the reconciler sends them again from the store; " + batches
	}
	return true, "Troupe cannot read the NATS server's jetstream sync_interval: nats-server's default syncs to disk every 2 minutes, and a crash of its host (not of the process) loses the messages acknowledged since (the reconciler sends them again from the store); " +
		batches + ". Set sync_interval: always on the server and nats.sync: \"always\" here, or say nats.sync: \"periodic\", which also turns atomic batches off"
}

// logSyncPolicy logs syncPolicy at start.
func logSyncPolicy(log zerolog.Logger, n config.NATS) {
	warn, msg := syncPolicy(n)
	ev := log.Info()
	if warn {
		ev = log.Warn()
	}
	ev.Str("nats_sync", n.Sync).Bool("atomic_batches", n.UseAtomicBatches()).Msg(msg)
}
