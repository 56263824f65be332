package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/telemetry"
	"github.com/troupe-dev/troupe/schemas"
)

// processUse is what one process of a running Troupe used during a run.
type processUse struct {
	Host     string   `json:"host"`
	PID      int      `json:"pid"`
	Services []string `json:"services"`
	// CPUSeconds is the CPU time used during the run; for a process that
	// started during it (Whole), since its start.
	CPUSeconds float64 `json:"cpu_seconds"`
	Whole      bool    `json:"started_during_run,omitempty"`
	PeakRSSMB  float64 `json:"peak_rss_mb"` // since the process started
	RSSMB      float64 `json:"rss_mb"`      // at the end of the run
}

// remoteMeter measures a running Troupe from outside, by its pings: the
// processes' CPU and memory (<prefix>.processes.ping) and the role's
// workers' tasks in flight and dispatch latency (<prefix>.workers.ping).
type remoteMeter struct {
	nc   *nats.Conn
	subj bus.Subjects
	role string

	procs0   map[string]schemas.ProcessInfo
	workers0 map[string]schemas.WorkerInfo
	started  time.Time // when the meter first asked

	inbox string
	sub   *nats.Subscription
	mu    sync.Mutex
	// flight holds each worker's samples of its tasks in flight.
	flight map[string]*flightSamples
}

type flightSamples struct {
	max, sum, n int
}

// pingWait is how long the meter collects the answers to a ping.
const pingWait = 500 * time.Millisecond

// startRemoteMeter reads where the processes and workers stand before the
// run, and listens for the in-flight samples that sample asks for.
func startRemoteMeter(ctx context.Context, nc *nats.Conn, subj bus.Subjects, role string) (*remoteMeter, error) {
	m := &remoteMeter{nc: nc, subj: subj, role: role, procs0: map[string]schemas.ProcessInfo{},
		workers0: map[string]schemas.WorkerInfo{}, flight: map[string]*flightSamples{}, started: time.Now()}
	procs, err := bus.PingProcesses(ctx, nc, subj, pingWait)
	if err != nil {
		return nil, err
	}
	for _, p := range procs {
		m.procs0[p.ID] = p
	}
	workers, err := bus.PingWorkers(ctx, nc, subj, pingWait)
	if err != nil {
		return nil, err
	}
	for _, w := range workers {
		m.workers0[w.ID] = w
	}
	m.inbox = nc.NewRespInbox()
	m.sub, err = nc.Subscribe(m.inbox, func(msg *nats.Msg) {
		var w schemas.WorkerInfo
		if json.Unmarshal(msg.Data, &w) != nil || w.ID == "" || w.Role != role {
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		f := m.flight[w.ID]
		if f == nil {
			f = &flightSamples{}
			m.flight[w.ID] = f
		}
		f.max, f.sum, f.n = max(f.max, w.InFlight), f.sum+w.InFlight, f.n+1
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// sample asks every worker how many tasks it runs; the answers come to
// the meter's inbox.
func (m *remoteMeter) sample() {
	_ = m.nc.PublishRequest(m.subj.WorkersPing(), m.inbox, nil)
}

// finish stops sampling and puts into rep what the processes and the
// role's workers report after the run, against what they reported before.
func (m *remoteMeter) finish(ctx context.Context, rep *benchReport) {
	_ = m.sub.Unsubscribe()
	procs, err := bus.PingProcesses(ctx, m.nc, m.subj, pingWait)
	if err == nil && len(procs) == 0 {
		rep.Notes = append(rep.Notes, "no process answered "+m.subj.ProcessesPing()+" (a Troupe older than this command, or a NATS user that may not publish it): no CPU or memory figures")
	}
	for _, p := range procs {
		use := processUse{Host: p.Host, PID: p.PID, Services: p.Services, CPUSeconds: p.CPUSeconds, PeakRSSMB: p.PeakRSSMB, RSSMB: p.RSSMB}
		if p0, ok := m.procs0[p.ID]; ok {
			use.CPUSeconds -= p0.CPUSeconds
		} else {
			use.Whole = true
			if p.StartedAt.Before(m.started) {
				rep.Notes = append(rep.Notes, fmt.Sprintf("process %s pid %d did not answer before the run: its CPU seconds are since it started", p.Host, p.PID))
			}
		}
		rep.Processes = append(rep.Processes, use)
	}
	for id, p0 := range m.procs0 {
		if !slices.ContainsFunc(procs, func(p schemas.ProcessInfo) bool { return p.ID == id }) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("process %s pid %d answered before the run, not after it (stopped, or slow to answer)", p0.Host, p0.PID))
		}
	}

	workers, err := bus.PingWorkers(ctx, m.nc, m.subj, pingWait)
	if err != nil {
		return
	}
	var after, before [][]schemas.Bucket
	answered := map[string]bool{}
	for _, w := range workers {
		if w.Role != m.role {
			continue
		}
		answered[w.ID] = true
		rep.Concurrency = max(rep.Concurrency, w.Concurrency)
		w0, ok := m.workers0[w.ID]
		if !ok && w.StartedAt.Before(m.started) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("a %s worker (pid %d) did not answer before the run: its dispatch latencies since it started are counted", m.role, w.PID))
		}
		after = append(after, w.Dispatch)
		before = append(before, w0.Dispatch)
	}
	for id, w0 := range m.workers0 {
		if w0.Role == m.role && !answered[id] {
			rep.Notes = append(rep.Notes, fmt.Sprintf("a %s worker (pid %d) answered before the run, not after it: its dispatch latencies are missing", m.role, w0.PID))
		}
	}
	if len(after) == 0 {
		rep.Notes = append(rep.Notes, "no "+m.role+" worker answered "+m.subj.WorkersPing()+": no dispatch latency or tasks in flight")
		return
	}
	d := telemetry.BucketsSince(after, before)
	if len(d) == 0 {
		rep.Notes = append(rep.Notes, "the "+m.role+" workers reported no dispatch latencies for the run (a Troupe older than this command?)")
	} else {
		var n uint64
		for _, b := range d {
			n += b.Count
		}
		msOf := func(q float64) float64 { return 1000 * telemetry.Quantile(d, q) }
		rep.Dispatch = &quantiles{N: int(n), P50: msOf(0.50), P90: msOf(0.90), P99: msOf(0.99), Max: 1000 * d[len(d)-1].High}
		rep.DispatchFrom = "the workers' histograms: each figure within 19 %"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.flight) > 0 {
		fl := &inFlight{Workers: len(m.flight)}
		for _, f := range m.flight {
			fl.Max = max(fl.Max, f.max)
			if f.n > 0 {
				fl.Mean += float64(f.sum) / float64(f.n) / float64(len(m.flight))
			}
		}
		rep.InFlight = fl
	}
}
