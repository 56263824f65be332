package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

var (
	natsOnce sync.Once
	natsPath string
	natsErr  error
)

// natsServerBin builds nats-server from the module go.mod names, once.
func natsServerBin(t *testing.T) string {
	t.Helper()
	natsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nats-server-bin-")
		if err != nil {
			natsErr = err
			return
		}
		natsPath = filepath.Join(dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", natsPath, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	require.NoError(t, natsErr)
	return natsPath
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// natsNode is a nats-server process with JetStream on disk that a test
// can kill and start again on the same port and directory.
type natsNode struct {
	t       *testing.T
	name    string
	port    int
	cport   int
	dir     string
	conf    string
	cmd     *exec.Cmd
	done    chan struct{}
	logs    *lockedWriter
	cluster []int // cluster ports of every node, for routes
}

// newNATSNodes configures n nodes: one standalone server, or a cluster.
func newNATSNodes(t *testing.T, n int) []*natsNode {
	t.Helper()
	nodes := make([]*natsNode, n)
	var cports []int
	for i := range nodes {
		nodes[i] = &natsNode{t: t, name: fmt.Sprintf("n%d", i), port: freePort(t), dir: t.TempDir(), logs: &lockedWriter{w: &bytes.Buffer{}}}
		if n > 1 {
			nodes[i].cport = freePort(t)
			cports = append(cports, nodes[i].cport)
		}
	}
	for _, nd := range nodes {
		nd.cluster = cports
		nd.writeConf()
		t.Cleanup(nd.kill)
	}
	return nodes
}

// startCluster starts an n-node cluster and waits until it can place an
// R3 stream (a meta leader, every peer known). The ports are picked free
// and bound a moment later by the servers; a parallel test can take one in
// between, and a node that cannot listen leaves the cluster a peer short.
// So a cluster that does not form within a minute is started again on
// fresh ports, up to three times, and the servers' logs are shown when it
// never forms. It returns the nodes, their client URLs and a client.
func startCluster(t *testing.T, n int) ([]*natsNode, string, *dev) {
	t.Helper()
	var logs []string
	for range 3 {
		nodes := newNATSNodes(t, n)
		var wg sync.WaitGroup
		errs := make([]error, len(nodes))
		for i, nd := range nodes {
			wg.Go(func() { errs[i] = nd.tryStart() })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			for _, nd := range nodes {
				nd.kill()
			}
			logs = []string{err.Error()}
			t.Logf("a node did not start; again on fresh ports")
			continue
		}
		var list []string
		for _, nd := range nodes {
			list = append(list, nd.url())
		}
		urls := strings.Join(list, ",")
		d := client(t, urls)
		js, err := jetstream.New(d.NC)
		require.NoError(t, err)
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "WARMUP", Subjects: []string{"warmup"}, Replicas: n})
			if err == nil {
				err = js.DeleteStream(ctx, "WARMUP")
			}
			cancel()
			if err == nil {
				return nodes, urls, d
			}
			time.Sleep(200 * time.Millisecond)
		}
		d.NC.Close()
		logs = logs[:0]
		for _, nd := range nodes {
			logs = append(logs, nd.name+":\n"+nd.logs.String())
			nd.kill()
		}
		t.Logf("the cluster did not form within a minute; again on fresh ports")
	}
	t.Fatalf("the cluster cannot place an R%d stream; the servers said:\n%s", n, strings.Join(logs, "\n"))
	return nil, "", nil
}

func (n *natsNode) writeConf() {
	conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: %q, sync_interval: always }
`, n.name, n.port, n.dir)
	if len(n.cluster) > 0 {
		var routes []string
		for _, p := range n.cluster {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
		}
		conf += fmt.Sprintf("cluster { name: troupe, listen: 127.0.0.1:%d, routes: [%s] }\n", n.cport, strings.Join(routes, ", "))
	}
	n.conf = filepath.Join(n.dir, "nats.conf")
	require.NoError(n.t, os.WriteFile(n.conf, []byte(conf), 0o644))
}

func (n *natsNode) start() {
	n.t.Helper()
	require.NoError(n.t, n.tryStart())
}

// tryStart starts the server and waits until it answers on its port; an
// error says it did not (it exited, say, unable to listen).
func (n *natsNode) tryStart() error {
	n.cmd = exec.Command(natsServerBin(n.t), "-c", n.conf)
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		return err
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(n.cmd, n.done)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-n.done:
			return fmt.Errorf("nats-server %s exited:\n%s", n.name, n.logs.String())
		default:
		}
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.port))
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server %s does not answer on port %d:\n%s", n.name, n.port, n.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL: no chance to flush anything.
func (n *natsNode) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Kill()
	<-n.done
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// services are troupe's services in separate processes on PostgreSQL.
type services struct {
	t        *testing.T
	env      []string
	args     []string
	procs    map[string]*proc
	started  map[string][]string // the arguments each was started with
	opsAddrs map[string]string
}

var opsLine = regexp.MustCompile(`"addr":"([^"]+)","time":"[^"]*","message":"ops endpoint listening`)

// start starts one service (orchestrator, review, or worker with its
// flags) and waits until its ops endpoint listens.
func (s *services) start(name string, args ...string) *proc {
	s.t.Helper()
	all := append(append(args, "--ops-addr", "127.0.0.1:0", "--log-level", "info", "--grace", "20s"), s.args...)
	p := startProc(s.t, s.env, all...)
	s.procs[name], s.started[name] = p, args
	require.Eventually(s.t, func() bool { return opsLine.MatchString(p.logs.String()) }, 60*time.Second, 20*time.Millisecond, "%s did not start:\n%s", name, p.logs.String())
	s.opsAddrs[name] = opsLine.FindStringSubmatch(p.logs.String())[1]
	return p
}

// ready reports the service's /readyz status code.
func (s *services) ready(name string) int {
	resp, err := http.Get("http://" + s.opsAddrs[name] + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// startServices starts the orchestrator, the review service and one
// worker process for every role against natsURL and dbURL.
func startServices(t *testing.T, natsURL, dbURL, config string, workerArgs ...string) *services {
	t.Helper()
	s := &services{t: t, procs: map[string]*proc{}, started: map[string][]string{}, opsAddrs: map[string]string{},
		env:  []string{"TROUPE_NATS_URL=" + natsURL, "TROUPE_DATABASE_URL=" + dbURL},
		args: []string{"--config", config}}
	s.start("orchestrator", "orchestrator")
	s.start("review", "review")
	s.start("worker", append([]string{"worker", "--role", strings.Join(schemas.Roles, ","), "--concurrency", "16"}, workerArgs...)...)
	for _, name := range []string{"orchestrator", "review", "worker"} {
		require.Eventually(t, func() bool { return s.ready(name) == 200 }, 2*time.Minute, 50*time.Millisecond, "%s not ready", name)
	}
	return s
}

// client connects to NATS like a user of the cluster.
func client(t *testing.T, urls string) *dev {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return &dev{t: t, URL: urls, NC: nc, Dir: t.TempDir()}
}

// submitMany submits n single-task jobs, spread over the roles.
func submitMany(t *testing.T, d *dev, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for i := range n {
		role := schemas.Roles[i%len(schemas.Roles)]
		job := call[schemas.Job](d, "jobs.submit", schemas.Submission{
			Title: fmt.Sprintf("Job %d", i), Tasks: []schemas.PlanTask{{Key: "only", Role: role, Instructions: "Do it."}},
		})
		ids = append(ids, job.ID)
	}
	return ids
}

// countJobs counts jobs by status through the API, every page.
func countJobs(t *testing.T, d *dev) map[string]int {
	t.Helper()
	counts := map[string]int{}
	req := schemas.ListRequest{Limit: 200}
	for {
		body, err := json.Marshal(req)
		require.NoError(t, err)
		msg, err := d.NC.Request("troupe.api.jobs.list", body, 10*time.Second)
		if err != nil {
			return nil // NATS is away: ask again later
		}
		var page schemas.JobList
		if json.Unmarshal(msg.Data, &page) != nil {
			return nil
		}
		for _, j := range page.Jobs {
			counts[j.Status]++
		}
		if page.NextCursor == "" {
			return counts
		}
		req.Cursor = page.NextCursor
	}
}

// waitAllEnded waits until n jobs have ended.
func waitAllEnded(t *testing.T, d *dev, n int, within time.Duration) {
	t.Helper()
	var last map[string]int
	require.Eventually(t, func() bool {
		c := countJobs(t, d)
		if c != nil {
			last = c
		}
		return c != nil && c[schemas.JobDone]+c[schemas.JobFailed]+c[schemas.JobCancelled] == n
	}, within, 250*time.Millisecond, "jobs did not all end: %v", last)
}

const clusterConfig = `{"reliability": {"reconcileInterval": "1s", "staleAfter": "10s", "ackWait": "10s"}}`

// TestNATSRestart: the NATS server is killed and started again during a
// run of 600 tasks; none is lost, none duplicated.
func TestNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection: slow")
	}
	t.Parallel()
	dbURL := testPGURL(t)
	node := newNATSNodes(t, 1)[0]
	node.start()
	s := startServices(t, node.url(), dbURL, writeConfig(t, clusterConfig))
	d := client(t, node.url())

	ids := submitMany(t, d, 600)
	require.Eventually(t, func() bool {
		c := countJobs(t, d)
		return c != nil && c[schemas.JobDone] >= 100
	}, 2*time.Minute, 50*time.Millisecond)
	node.kill()
	require.Eventually(t, func() bool { return s.ready("worker") == 503 }, 10*time.Second, 20*time.Millisecond, "not ready while NATS is down")
	time.Sleep(time.Second) // an outage, not a blip
	node.start()

	waitAllEnded(t, d, len(ids), 3*time.Minute)
	ends := reconcile(t, d, ids)
	require.Equal(t, len(ids), ends[schemas.JobDone])
	for name := range s.procs {
		require.Equal(t, 200, s.ready(name), name)
	}
}

// TestClusterNodeKilled: a three-node cluster with R3 streams; one node is
// killed during the run; the run completes and nothing is lost.
func TestClusterNodeKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection: slow")
	}
	t.Parallel()
	dbURL := testPGURL(t)
	nodes, urls, d := startCluster(t, 3)
	cfg := writeConfig(t, `{"nats": {"replicas": 3}, "reliability": {"reconcileInterval": "1s", "staleAfter": "10s", "ackWait": "10s"}}`)
	s := startServices(t, urls, dbURL, cfg)

	ids := submitMany(t, d, 300)
	require.Eventually(t, func() bool {
		c := countJobs(t, d)
		return c != nil && c[schemas.JobDone] >= 50
	}, 2*time.Minute, 50*time.Millisecond)
	t.Logf("%d jobs submitted, 50 done; killing node n1", len(ids))
	nodes[1].kill()

	waitAllEnded(t, d, len(ids), 3*time.Minute)
	ends := reconcile(t, d, ids)
	require.Equal(t, len(ids), ends[schemas.JobDone])
	_ = s
}

// TestSIGTERMServices: SIGTERM to each service during a run: each exits 0
// within its grace period, starts again, and nothing is lost.
func TestSIGTERMServices(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection: slow")
	}
	t.Parallel()
	dbURL := testPGURL(t)
	node := newNATSNodes(t, 1)[0]
	node.start()
	cfg := writeConfig(t, clusterConfig)
	s := startServices(t, node.url(), dbURL, cfg, "--offline-latency", "200ms")
	d := client(t, node.url())
	ids := submitMany(t, d, 120)
	for _, name := range []string{"worker", "review", "orchestrator"} {
		p := s.procs[name]
		code, took := p.term(25 * time.Second)
		require.Equal(t, 0, code, "%s exit code\n%s", name, p.logs.String())
		t.Logf("%s exited 0 %s after SIGTERM", name, took.Round(time.Millisecond))
		s.start(name, s.started[name]...)
	}
	waitAllEnded(t, d, len(ids), 3*time.Minute)
	ends := reconcile(t, d, ids)
	require.Equal(t, len(ids), ends[schemas.JobDone])
}
