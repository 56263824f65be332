package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/store/postgres/postgrestest"
)

// TestBenchCommand: troupe bench runs a load on its own embedded Troupe
// and reports every figure, and that each job was promoted exactly once;
// with --batch it submits through submit_batch.
func TestBenchCommand(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--jobs", "120", "--baseline", "50", "--rate", "400"},
		{"--jobs", "120", "--batch", "25", "--baseline", "-1", "--model-latency", "20ms", "--worker-concurrency", "16"},
	} {
		cmd := exec.Command(troupeBin(t), append([]string{"bench", "--json"}, args...)...)
		cmd.Env = append(os.Environ(), "TROUPE_CONFIG=", "TROUPE_NATS_URL=", "TROUPE_DATABASE_URL=")
		out, err := cmd.Output()
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		require.NoError(t, err, "troupe bench %v: %s\n%s", args, out, stderr)
		var r struct {
			Jobs          int     `json:"jobs"`
			Done          int     `json:"Done"`
			ExactlyOnce   bool    `json:"exactly_once"`
			Promoted      int     `json:"promoted_outputs"`
			SubmitRate    float64 `json:"submit_rate"`
			JobsPerSecond float64 `json:"jobs_per_second"`
			Steady        float64 `json:"steady_jobs_per_second"`
			Rate          float64 `json:"rate"`
			Ideal         float64 `json:"ideal_jobs_per_second"`
			Dispatch      struct {
				N   int     `json:"n"`
				P99 float64 `json:"p99"`
			} `json:"dispatch_ms"`
			EndToEnd struct {
				N   int     `json:"n"`
				P50 float64 `json:"p50"`
			} `json:"end_to_end_ms"`
			Raw *struct {
				N int `json:"n"`
			} `json:"raw_jetstream_ms"`
			InFlight struct {
				Max int `json:"max"`
			} `json:"in_flight"`
			GroupCommit struct {
				Groups, Transactions, Alone int
			} `json:"group_commit"`
			CPU       float64 `json:"cpu_seconds"`
			PeakRSSMB float64 `json:"peak_rss_mb"`
		}
		require.NoError(t, json.Unmarshal(out, &r), "%s", out)
		require.Equal(t, 120, r.Done, args)
		require.True(t, r.ExactlyOnce, args)
		require.Equal(t, 120, r.Promoted, args)
		require.Greater(t, r.SubmitRate, 0.0)
		require.Greater(t, r.JobsPerSecond, 0.0)
		require.Greater(t, r.Steady, 0.0)
		require.GreaterOrEqual(t, r.Dispatch.N, 120, "every task's dispatch was measured")
		require.Greater(t, r.Dispatch.P99, 0.0)
		require.Equal(t, 120, r.EndToEnd.N)
		require.Positive(t, r.InFlight.Max)
		require.Positive(t, r.CPU)
		require.GreaterOrEqual(t, r.GroupCommit.Transactions+r.GroupCommit.Alone, 120*4, "submit, running, stage, promote, done: each job's writes went through group commit")
		require.Positive(t, r.PeakRSSMB)
		if args[3] == "50" {
			require.NotNil(t, r.Raw)
			require.Equal(t, 50, r.Raw.N)
			require.Zero(t, r.Ideal, "offline, there is no ideal rate")
			require.Equal(t, 400.0, r.Rate)
			require.LessOrEqual(t, r.SubmitRate, 400*1.05, "--rate paces the submissions")
		} else {
			require.Nil(t, r.Raw)
			require.InDelta(t, 16/0.020, r.Ideal, 0.001, "16 at a time, 20 ms each")
		}
	}
}

// TestBenchCommandAgainstARunningTroupe: against a running Troupe
// (--nats-url), troupe bench reads from the processes and workers what it
// cannot time itself: each process's CPU and memory, the dispatch latency
// from the workers' histograms, and their tasks in flight.
func TestBenchCommandAgainstARunningTroupe(t *testing.T) {
	t.Parallel()
	d := startDev(t)
	db := filepath.Join(d.Dir, "data", "troupe.db")
	// Tasks before the run are not the run's.
	stdout, stderr, code := d.cli("bench", "--json", "--nats-url", d.URL, "--jobs", "20", "--database-url", db)
	require.Zero(t, code, "%s\n%s", stdout, stderr)
	stdout, stderr, code = d.cli("bench", "--json", "--nats-url", d.URL, "--jobs", "150", "--rate", "300",
		"--baseline", "50", "--database-url", db)
	require.Zero(t, code, "%s\n%s", stdout, stderr)
	var r struct {
		ExactlyOnce bool `json:"exactly_once"`
		Concurrency int  `json:"worker_concurrency"`
		Dispatch    *struct {
			N             int
			P50, P90, P99 float64
		} `json:"dispatch_ms"`
		DispatchFrom string  `json:"dispatch_from"`
		RawRatio     float64 `json:"dispatch_p99_over_raw_p99"`
		InFlight     *struct {
			Max     int
			Workers int
		} `json:"in_flight"`
		Processes []struct {
			PID        int      `json:"pid"`
			Services   []string `json:"services"`
			CPUSeconds float64  `json:"cpu_seconds"`
			Whole      bool     `json:"started_during_run"`
			PeakRSSMB  float64  `json:"peak_rss_mb"`
			RSSMB      float64  `json:"rss_mb"`
		} `json:"processes"`
		Notes []string `json:"notes"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &r), "%s", stdout)
	require.True(t, r.ExactlyOnce)
	require.Empty(t, r.Notes)

	require.Len(t, r.Processes, 1, "troupe dev is one process")
	p := r.Processes[0]
	require.Equal(t, d.cmd.Process.Pid, p.PID)
	require.Equal(t, []string{"dev"}, p.Services)
	require.False(t, p.Whole, "it ran before the run")
	require.Positive(t, p.CPUSeconds)
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID)); err == nil {
		// The run's share, not the process's whole: its start and the run
		// before cost more than the clock's tick.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		utime, _ := strconv.Atoi(f[11])
		stime, _ := strconv.Atoi(f[12])
		require.Less(t, p.CPUSeconds, float64(utime+stime)/100-0.05, "CPU seconds of the run only")
	}
	require.Positive(t, p.PeakRSSMB)
	require.Positive(t, p.RSSMB)
	require.LessOrEqual(t, p.RSSMB, p.PeakRSSMB)

	require.NotNil(t, r.Dispatch, "%s", stdout)
	require.GreaterOrEqual(t, r.Dispatch.N, 150, "this run's tasks, and not the 20 before")
	require.Less(t, r.Dispatch.N, 150+20)
	require.Positive(t, r.Dispatch.P50)
	require.LessOrEqual(t, r.Dispatch.P50, r.Dispatch.P90)
	require.LessOrEqual(t, r.Dispatch.P90, r.Dispatch.P99)
	require.Contains(t, r.DispatchFrom, "histograms")
	require.Positive(t, r.RawRatio)

	require.NotNil(t, r.InFlight, "%s", stdout)
	require.Equal(t, 1, r.InFlight.Workers, "troupe dev runs one pm worker")
	require.Positive(t, r.Concurrency)
	require.LessOrEqual(t, r.InFlight.Max, r.Concurrency)
}

// TestBenchCommandPostgres: on PostgreSQL, troupe bench also reports what
// the database counted for the run. Other tests share the database, so
// the counts are checked from below: a job is at least two transactions
// of its own (the review's read of the output, the orchestrator's look at
// the job: statements outside a transaction), and
// five write-only ones (submit, start, stage, decide, finish; checked for
// four) that commit in groups; it writes at least its job, task, output, review, artifact,
// events and outbox rows, and outbox rows are deleted once published.
func TestBenchCommandPostgres(t *testing.T) {
	t.Parallel()
	url := postgrestest.TestURL(t)
	cmd := exec.Command(troupeBin(t), "bench", "--json", "--jobs", "60", "--baseline", "-1", "--database-url", url)
	cmd.Env = append(os.Environ(), "TROUPE_CONFIG=", "TROUPE_NATS_URL=", "TROUPE_DATABASE_URL=")
	out, err := cmd.Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	require.NoError(t, err, "troupe bench: %s\n%s", out, stderr)
	var r struct {
		ExactlyOnce bool `json:"exactly_once"`
		TxGroup     *struct {
			Transactions int64 `json:"Transactions"`
			Commits      int64 `json:"Commits"`
		} `json:"tx_group"`
		Postgres *struct {
			Commits  int64   `json:"commits"`
			Buffers  int64   `json:"buffers"`
			Inserted int64   `json:"rows_inserted"`
			Updated  int64   `json:"rows_updated"`
			Deleted  int64   `json:"rows_deleted"`
			Sessions int64   `json:"sessions"`
			CPU      float64 `json:"cpu_seconds"`
		} `json:"postgres"`
	}
	require.NoError(t, json.Unmarshal(out, &r), "%s", out)
	require.True(t, r.ExactlyOnce)
	require.NotNil(t, r.Postgres, "%s", out)
	require.GreaterOrEqual(t, r.Postgres.Commits, int64(60*2))
	require.NotNil(t, r.TxGroup, "%s", out)
	require.GreaterOrEqual(t, r.TxGroup.Transactions, int64(60*4))
	require.Positive(t, r.TxGroup.Commits)
	require.LessOrEqual(t, r.TxGroup.Commits, r.TxGroup.Transactions)
	require.GreaterOrEqual(t, r.Postgres.Inserted, int64(60*10))
	require.GreaterOrEqual(t, r.Postgres.Updated, int64(60*3))
	// The relay deletes published rows every 50 ms: the last ones may be
	// deleted after the counts were read.
	require.Positive(t, r.Postgres.Deleted, "published outbox rows are deleted")
	require.Positive(t, r.Postgres.Buffers)
	require.NotZero(t, r.Postgres.Sessions)
	if serverIsLocal(t, url) {
		// A server on this machine (as in CI): its backends' CPU is read.
		require.Positive(t, r.Postgres.CPU, "%s", out)
	}
}

// serverIsLocal reports whether the server at url runs on this machine, in
// its process namespace: its backend's pid is a postgres process here.
func serverIsLocal(t *testing.T, url string) bool {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var pid int
	require.NoError(t, conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && strings.HasPrefix(string(comm), "postgres")
}
