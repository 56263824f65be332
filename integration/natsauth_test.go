package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store/postgres"
	"github.com/troupe-dev/troupe/store/postgres/pgroles"
)

// lpDeployment is Troupe under least privilege: a nats-server configured
// with what troupe nats-config prints, and every service a process of its
// own under its own NATS user and its own PostgreSQL role.
type lpDeployment struct {
	t      *testing.T
	node   *natsNode
	envDir string
	// dbOwner is the test schema's URL as its owner; dbURLs the services'.
	dbOwner string
	dbURLs  map[string]string
	cfg     string
	procs   map[string]lpService
}

// lpService is one service's process and its ops address.
type lpService struct {
	p   *proc
	ops string
}

// startLeastPrivilege starts a least-privilege deployment with the
// configuration file cfg; nats-config gets extra arguments (people). The
// services whose users may not create streams start first and must wait,
// not ready, rather than fail; then the orchestrator, and every service is
// ready when it returns.
func startLeastPrivilege(t *testing.T, cfg string, natsConfigArgs ...string) *lpDeployment {
	t.Helper()
	d := &lpDeployment{t: t, node: newNATSNodes(t, 1)[0], envDir: filepath.Join(t.TempDir(), "nats-env"), cfg: cfg, procs: map[string]lpService{}}
	gen := exec.Command(troupeBin(t), append([]string{"nats-config", "--env-dir", d.envDir}, natsConfigArgs...)...)
	gen.Env = append(os.Environ(), "TROUPE_CONFIG=")
	var stderr bytes.Buffer
	gen.Stderr = &stderr
	auth, err := gen.Output()
	require.NoError(t, err, stderr.String())
	require.NoError(t, os.WriteFile(filepath.Join(d.node.dir, "troupe-auth.conf"), auth, 0o600))
	conf, err := os.OpenFile(d.node.conf, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = conf.WriteString("include ./troupe-auth.conf\n")
	require.NoError(t, err)
	require.NoError(t, conf.Close())
	d.node.start()

	// Each service under its own PostgreSQL role too (troupe migrate
	// --roles): a whole run needs nothing more of the store.
	d.dbOwner = testPGURL(t)
	d.dbURLs = serviceDBURLs(t, d.dbOwner)

	d.start("review", "review")
	for _, role := range schemas.Roles {
		d.start("worker-"+role, "worker", "--role", role, "--concurrency", "4")
	}
	for user, s := range d.procs {
		s.p.waitLog("this NATS user may not create or update streams and consumers")
		s.p.waitLog("creating the streams failed; retrying")
		require.Equal(t, 503, d.ready(user), "%s is not ready before the streams exist", user)
		select {
		case err := <-s.p.done:
			t.Fatalf("%s exited: %v\n%s", user, err, s.p.logs.String())
		default:
		}
	}
	d.start("orchestrator", "orchestrator")
	for user := range d.procs {
		require.Eventually(t, func() bool { return d.ready(user) == 200 }, 2*time.Minute, 50*time.Millisecond, "%s ready once the orchestrator created the streams", user)
	}
	return d
}

// creds are a NATS user's variables, from its env file.
func (d *lpDeployment) creds(user string) map[string]string {
	return readEnvFile(d.t, filepath.Join(d.envDir, user+".env"))
}

// env is the environment of a process (a service or the CLI) under user.
func (d *lpDeployment) env(user string) []string {
	db := d.dbURLs[user] // none for the client and the reviewer: they go through NATS
	if strings.HasPrefix(user, "worker-") {
		db = d.dbURLs[pgroles.Worker]
	}
	// A developer task that says POISON panics its handler every time.
	e := []string{"TROUPE_NATS_URL=" + d.node.url(), "TROUPE_DATABASE_URL=" + db, "TROUPE_FAULT_PANIC_ON=POISON"}
	for k, v := range d.creds(user) {
		e = append(e, k+"="+v)
	}
	return e
}

// start starts a service under user.
func (d *lpDeployment) start(user string, args ...string) {
	d.t.Helper()
	p := startProc(d.t, d.env(user), append(args, "--log-level", "info", "--grace", "20s", "--config", d.cfg)...)
	require.Eventually(d.t, func() bool { return opsLine.MatchString(p.logs.String()) }, time.Minute, 20*time.Millisecond, "%s did not start:\n%s", user, p.logs.String())
	d.procs[user] = lpService{p, opsLine.FindStringSubmatch(p.logs.String())[1]}
}

// ready is the status of a service's /readyz (0: no answer).
func (d *lpDeployment) ready(user string) int {
	resp, err := http.Get("http://" + d.procs[user].ops + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestLeastPrivilegeNATS: a nats-server configured with what troupe
// nats-config prints, every service a process of its own under its own
// user, and its own PostgreSQL role (troupe migrate --roles). The workers and the review service, which may not create streams,
// start first and wait for the orchestrator, which may; a developer
// worker's user can neither take another role's tasks nor decide a review
// nor touch the streams; and a job submitted with the client's user runs
// through every role to done.
func TestLeastPrivilegeNATS(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, `{"roles": {"developer": {"maxDeliver": 2, "backoff": ["50ms"]}},
		"reliability": {"reconcileInterval": "1s", "staleAfter": "10s", "ackWait": "10s"}}`)
	d := startLeastPrivilege(t, cfg, "--person", "ada:reviewer")
	node, creds, env, procs, dbURL := d.node, d.creds, d.env, d.procs, d.dbOwner

	// (a) What a developer worker's credentials cannot do.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dev := connectAs(t, node.url(), creds("worker-developer"))
	devJS, err := jetstream.New(dev)
	require.NoError(t, err)
	_, err = devJS.Consumer(ctx, bus.StreamTasks, "workers-developer")
	require.NoError(t, err, "it binds its own role's consumer")
	refused := func(nc *nats.Conn, subject string, body any) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := bus.Request(rctx, nc, subject, body, nil)
		require.True(t, bus.IsDenied(err), "%s: want a permissions violation, got %v", subject, err)
		require.ErrorContains(t, err, `Publish to "`+subject+`"`)
	}
	refused(dev, "$JS.API.CONSUMER.MSG.NEXT.TROUPE_TASKS.workers-tester", map[string]any{"batch": 1, "expires": int64(time.Second)})
	refused(dev, "$JS.API.CONSUMER.INFO.TROUPE_TASKS.workers-tester", nil)
	refused(dev, "troupe.api.reviews.decide", schemas.ReviewDecision{OutputID: "x", Decision: "promote", Reviewer: "human:mallory"})
	refused(dev, "troupe.api.reviews.decide.ada", schemas.ReviewDecision{OutputID: "x", Decision: "promote"})
	refused(dev, "troupe.events.00000000-0000-0000-0000-000000000000.output_promoted", schemas.Event{Kind: schemas.EventOutputPromoted})
	refused(dev, "troupe.events.00000000-0000-0000-0000-000000000000.job_failed", schemas.Event{Kind: schemas.EventJobFailed})
	refused(dev, "troupe.events.00000000-0000-0000-0000-000000000000.task_dead_lettered", schemas.Event{Kind: schemas.EventTaskDeadLettered})
	refused(dev, "troupe.tasks.tester", schemas.TaskMessage{})
	refused(dev, "$JS.API.STREAM.CREATE.EVIL", jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}})
	refused(dev, "$JS.API.STREAM.DELETE.TROUPE_TASKS", nil)
	refused(dev, "$JS.API.STREAM.PURGE.TROUPE_TASKS", nil)
	refused(dev, "$JS.API.CONSUMER.DELETE.TROUPE_TASKS.workers-tester", nil)
	for _, subject := range []string{"troupe.tasks.tester", "troupe.api.reviews.decide", "_INBOX.>", "troupe.review.>"} {
		sub, err := dev.SubscribeSync(subject)
		require.NoError(t, err)
		_, err = sub.NextMsg(10 * time.Second)
		require.ErrorIs(t, err, nats.ErrPermissionViolation, "subscribing to %s", subject)
	}
	topo := bus.Topology{Roles: schemas.Roles}
	began := time.Now()
	require.True(t, bus.IsDenied(topo.Ensure(ctx, devJS)), "Ensure is refused")
	require.Less(t, time.Since(began), 10*time.Second, "at once, not after a timeout")
	require.NoError(t, topo.Check(ctx, devJS), "and the streams are all still there")

	// The review user (the dashboard's) sees every worker and every queue.
	rev := connectAs(t, node.url(), creds("review"))
	workers, err := bus.PingWorkers(ctx, rev, bus.Subjects{Prefix: "troupe"}, 2*time.Second)
	require.NoError(t, err)
	require.Len(t, workers, len(schemas.Roles), "every worker answers the dashboard's ping")
	revJS, err := jetstream.New(rev)
	require.NoError(t, err)
	_, err = revJS.Consumer(ctx, bus.StreamTasks, "workers-tester")
	require.NoError(t, err)

	// (b) A job submitted with the client's user goes through every role.
	cli := func(user string, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(troupeBin(t), args...)
		cmd.Env = append(append(os.Environ(), "TROUPE_CONFIG="), env(user)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		return out.String(), errb.String(), code
	}
	out, errOut, code := cli("client", "submit", "--wait", "--json", "--timeout", "30s", "--title", "Least privilege", "--brief", "Every service its own NATS user.")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	var job schemas.Job
	require.NoError(t, json.Unmarshal([]byte(out), &job))
	require.Equal(t, schemas.JobDone, job.Status)
	require.Len(t, job.Tasks, len(schemas.Roles), "the default plan: one task per role")
	for _, task := range job.Tasks {
		require.Equal(t, schemas.TaskPromoted, task.Status, "task %s (%s)", task.Key, task.Role)
	}

	// The client reads but does not decide; it is told so at once.
	require.NotEmpty(t, job.Tasks[0].Outputs)
	_, errOut, code = cli("client", "reviews", "approve", job.Tasks[0].Outputs[0].ID)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "this NATS user may not use it")
	out, errOut, code = cli("client", "jobs", "show", job.ID)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "6/6 promoted")
	// A person decides under her own NATS user, not a name she claims.
	_, errOut, code = cli("ada", "reviews", "approve", job.Tasks[0].Outputs[0].ID, "--reviewer", "mallory")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `"mallory" is not who sends this: it is recorded under the NATS user that sends it, "ada"`)
	_, errOut, code = cli("ada", "reviews", "approve", job.Tasks[0].Outputs[0].ID)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "only an output awaiting review can be decided", "served, as ada")

	// A client's requests whose reply subjects are streams' get no answer
	// there: the services answer on inboxes only (and may publish on no
	// other reply subject), so nothing lands in a stream and nothing is
	// dead-lettered (the dead-letter count below is the poisoned task's).
	forger := connectAs(t, node.url(), creds("client"))
	for _, reply := range []string{"troupe.tasks.pm", "troupe.events." + job.ID + ".output_promoted", "troupe.dlq.x", "troupe.review.tester"} {
		require.NoError(t, forger.PublishRequest("troupe.api.jobs.get", reply, []byte(`{"id":"`+job.ID+`"}`)))
		require.NoError(t, forger.PublishRequest("troupe.workers.ping", reply, nil))
	}
	require.NoError(t, forger.Flush())
	procs["orchestrator"].p.waitLog(`"reply_subject":"troupe.review.tester"`)
	procs["worker-developer"].p.waitLog(`"reply_subject":"troupe.review.tester"`)

	// A task that fails on every delivery: the developer worker dead-letters
	// it and fails its job; the client sees the dead letter, and only the
	// reviewer may discard it.
	out, errOut, code = cli("client", "submit", "--wait", "--json", "--timeout", "30s", "--title", "Poisoned", "--task", "impl:developer:This is POISON.")
	require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	var poisoned schemas.Job
	require.NoError(t, json.Unmarshal([]byte(out), &poisoned))
	require.Equal(t, schemas.JobFailed, poisoned.Status)
	require.Contains(t, poisoned.Reason, "dead-lettered: task impl (developer)")
	out, errOut, code = cli("client", "dlq", "ls", "--json")
	require.Equal(t, 0, code, errOut)
	var dead schemas.DeadLetterList
	require.NoError(t, json.Unmarshal([]byte(out), &dead))
	require.Len(t, dead.DeadLetters, 1, "the poisoned task's, and nothing a forged reply subject put in a stream")
	require.Equal(t, poisoned.ID, dead.DeadLetters[0].JobID)
	require.Equal(t, "workers-developer", dead.DeadLetters[0].Source)
	_, errOut, code = cli("client", "dlq", "discard", dead.DeadLetters[0].ID)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "this NATS user may not use it")
	_, errOut, code = cli("ada", "dlq", "discard", dead.DeadLetters[0].ID, "--by", "mallory")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `"mallory" is not who sends this`)
	_, errOut, code = cli("ada", "dlq", "discard", dead.DeadLetters[0].ID)
	require.Equal(t, 0, code, errOut)
	out, errOut, code = cli("client", "dlq", "show", "--json", dead.DeadLetters[0].ID)
	require.Equal(t, 0, code, errOut)
	var discarded schemas.DeadLetter
	require.NoError(t, json.Unmarshal([]byte(out), &discarded))
	require.Equal(t, schemas.DeadLetterDiscarded, discarded.Status)
	require.Equal(t, "ada", discarded.ResolvedBy, "recorded under the NATS user that discarded it")

	// troupe bench's user asks every process how much it used, and every
	// worker how busy it is: each answers, under its own user.
	client := connectAs(t, node.url(), creds("client"))
	infos, err := bus.PingProcesses(ctx, client, bus.Subjects{Prefix: bus.DefaultPrefix}, time.Second)
	require.NoError(t, err)
	var answered []string
	for _, info := range infos {
		require.Positive(t, info.CPUSeconds, "%v", info.Services)
		answered = append(answered, info.Services...)
	}
	require.ElementsMatch(t, slices.Collect(maps.Keys(procs)), answered)
	pinged, err := bus.PingWorkers(ctx, client, bus.Subjects{Prefix: bus.DefaultPrefix}, time.Second)
	require.NoError(t, err)
	require.Len(t, pinged, len(schemas.Roles))

	// The orchestrator's sweeper may fetch and delete a message that
	// exhausted its deliveries (here: one long gone).
	orch := connectAs(t, node.url(), creds("orchestrator"))
	orchJS, err := jetstream.New(orch)
	require.NoError(t, err)
	tasks, err := orchJS.Stream(ctx, bus.StreamTasks)
	require.NoError(t, err)
	_, err = tasks.GetMsg(ctx, 1)
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "JetStream answered")
	require.ErrorContains(t, tasks.DeleteMsg(ctx, 1), "no message found", "JetStream answered, it did not refuse")
	// A task for a role no consumer serves is refused by the stream.
	_, err = orchJS.Publish(ctx, "troupe.tasks.wizard", []byte(`{}`))
	require.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
	info, err := tasks.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, bus.DefaultLimits[bus.StreamTasks].MaxMsgs, info.Config.MaxMsgs, "the streams are bounded")

	// Every outbox row went out: each through a relay that may publish it.
	st, err := postgres.Open(ctx, dbURL)
	require.NoError(t, err)
	defer st.Close()
	require.Eventually(t, func() bool {
		unsent, err := st.OutboxListUnsent(ctx, 10)
		return err == nil && len(unsent) == 0
	}, 30*time.Second, 100*time.Millisecond, "the outbox drains")

	// No service was refused anything but creating the streams, which the
	// ones that may not tried once.
	for user, s := range procs {
		for _, line := range strings.Split(s.p.logs.String(), "\n") {
			if strings.Contains(line, "Permissions Violation") && !strings.Contains(line, `$JS.API.STREAM.UPDATE.`) {
				t.Errorf("%s was refused: %s", user, line)
			}
			// Nor did its PostgreSQL role lack a privilege, even where the
			// service only warns (a model call it could not record).
			if strings.Contains(line, "SQLSTATE 42501") {
				t.Errorf("%s was refused by PostgreSQL: %s", user, line)
			}
		}
	}
}

// connectAs connects with the credentials of an env file troupe
// nats-config wrote, the way the services do.
func connectAs(t *testing.T, url string, creds map[string]string) *nats.Conn {
	t.Helper()
	opts, err := bus.ConnectOptions(config.NATS{User: creds["TROUPE_NATS_USER"], Password: creds["TROUPE_NATS_PASSWORD"], InboxPrefix: creds["TROUPE_NATS_INBOX_PREFIX"]})
	require.NoError(t, err)
	nc, _, err := bus.Connect(url, "test-"+creds["TROUPE_NATS_USER"], zerolog.New(zerolog.NewTestWriter(t)), append(opts, nats.PermissionErrOnSubscribe(true))...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// readEnvFile reads a KEY=value file, skipping comments.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[k] = v
		}
	}
	return env
}
