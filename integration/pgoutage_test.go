package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store/postgres/postgrestest"
)

// tcpProxy forwards connections to a target and can cut them all, and
// refuse new ones, to play a database outage.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &tcpProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

// cut closes every connection and refuses new ones until restore.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *tcpProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// TestPostgresOutage: PostgreSQL becomes unreachable for a while during a
// run (a proxy cuts every connection and refuses new ones); the services
// back off and report not ready, nothing is lost, and the run completes
// after the database returns.
func TestPostgresOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection: slow")
	}
	t.Parallel()
	direct, err := url.Parse(postgrestest.TestURL(t))
	require.NoError(t, err)
	proxy := newTCPProxy(t, direct.Host)
	viaProxy := *direct
	viaProxy.Host = proxy.ln.Addr().String()
	q := viaProxy.Query()
	q.Set("pool_max_conns", "5") // see testPGURL
	viaProxy.RawQuery = q.Encode()

	node := newNATSNodes(t, 1)[0]
	node.start()
	// Retries would be spent in a fraction of the outage: messages are held
	// while the store is away, not retried, so none is dead-lettered.
	var roles []string
	for _, r := range schemas.Roles {
		roles = append(roles, fmt.Sprintf(`%q: {"maxDeliver": 2, "backoff": ["100ms"]}`, r))
	}
	cfg := writeConfig(t, `{"roles": {`+strings.Join(roles, ", ")+`}, "reliability": {"reconcileInterval": "1s", "staleAfter": "10s", "ackWait": "10s"}}`)
	s := startServices(t, node.url(), viaProxy.String(), cfg, "--offline-latency", "50ms")
	d := client(t, node.url())
	ids := submitMany(t, d, 200)
	require.Eventually(t, func() bool {
		c := countJobs(t, d)
		return c != nil && c[schemas.JobDone] >= 30
	}, 2*time.Minute, 50*time.Millisecond)

	proxy.cut()
	for _, name := range []string{"orchestrator", "review", "worker"} {
		require.Eventually(t, func() bool { return s.ready(name) == 503 }, 15*time.Second, 50*time.Millisecond, "%s reports not ready while the store is away", name)
	}
	// The API says the store is away, with a code worth retrying on.
	msg, err := d.NC.Request("troupe.api.jobs.get", []byte(`{"id":"`+ids[0]+`"}`), 30*time.Second)
	require.NoError(t, err)
	var er schemas.ErrorReply
	require.NoError(t, json.Unmarshal(msg.Data, &er))
	require.Equal(t, "unavailable", er.Code, "%s", msg.Data)
	require.Contains(t, er.Error, "store is unavailable")
	time.Sleep(5 * time.Second) // an outage far longer than maxDeliver × backoff
	proxy.restore()

	waitAllEnded(t, d, len(ids), 3*time.Minute)
	ends := reconcile(t, d, ids)
	require.Equal(t, len(ids), ends[schemas.JobDone])
	dead := call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{})
	require.Empty(t, dead.DeadLetters, "the outage dead-lettered nothing")
	for _, name := range []string{"orchestrator", "review", "worker"} {
		require.Eventually(t, func() bool { return s.ready(name) == 200 }, 15*time.Second, 50*time.Millisecond, "%s ready again", name)
	}
}
