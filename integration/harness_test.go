// Package integration holds Troupe's multi-process end-to-end tests: they
// build the real binary, start it as a separate process, and talk to it the
// way users do: plain NATS requests and the troupe CLI.
package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// troupeBin builds cmd/troupe once per test run.
func troupeBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "troupe-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "troupe")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/troupe").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

// dev is a troupe dev process.
type dev struct {
	t     *testing.T
	URL   string
	Dir   string
	NC    *nats.Conn
	cmd   *exec.Cmd
	Ready time.Duration
	// Web is the dashboard's base URL, without a trailing slash.
	Web  string
	logs *lockedWriter
	// banner is what troupe dev printed on standard output at start.
	banner string
}

// startDev starts troupe dev on a fresh directory and a free port, and
// returns when it accepts submissions.
func startDev(t *testing.T, args ...string) *dev {
	t.Helper()
	return startDevIn(t, t.TempDir(), nil, args...)
}

// startDevIn starts troupe dev with its data under dir (so a test can
// restart it on the same data), with extra environment variables.
func startDevIn(t *testing.T, dir string, env []string, args ...string) *dev {
	t.Helper()
	bin := troupeBin(t)
	cmd := exec.Command(bin, append([]string{"dev", "--data", filepath.Join(dir, "data"), "--log-level", "info", "--nats-port", "0", "--http", "127.0.0.1:0"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TROUPE_CONFIG=", "TROUPE_NATS_URL=", "TROUPE_DATABASE_URL=")
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	logs := &lockedWriter{w: &bytes.Buffer{}}
	cmd.Stderr = logs
	start := time.Now()
	require.NoError(t, cmd.Start())
	d := &dev{t: t, Dir: dir, cmd: cmd, logs: logs}
	t.Cleanup(d.stop)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(60 * time.Second)
	for d.URL == "" || !strings.Contains(d.banner, "submit:") {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("troupe dev exited before it was ready:\n%s", logs.String())
			}
			if strings.HasPrefix(line, "troupe dev ready") {
				d.Ready = time.Since(start)
			}
			d.banner += line + "\n"
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "NATS:"); ok {
				d.URL = strings.Fields(rest)[0]
			}
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "dashboard:"); ok {
				d.Web = strings.TrimSuffix(strings.Fields(rest)[0], "/")
			}
		case <-timeout:
			t.Fatalf("troupe dev not ready after 60s:\n%s", logs.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	nc, err := nats.Connect(d.URL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	d.NC = nc
	return d
}

// Stop stops troupe dev with SIGTERM and checks that it exits 0.
func (d *dev) Stop() { d.stop() }

func (d *dev) stop() {
	if d.cmd == nil || d.cmd.Process == nil || d.cmd.ProcessState != nil {
		return
	}
	d.NC.Close()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			d.t.Errorf("troupe dev exited with %v after SIGTERM\n%s", err, d.logs.String())
		}
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		d.t.Errorf("troupe dev did not stop within 30s of SIGTERM")
	}
	if d.t.Failed() {
		d.t.Logf("troupe dev logs:\n%s", tail(d.logs.String(), 8000))
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// request sends a raw API request and returns the body and the error
// reply, if any.
func (d *dev) request(endpoint string, body []byte) ([]byte, *schemas.ErrorReply) {
	d.t.Helper()
	msg, err := d.NC.Request("troupe.api."+endpoint, body, 10*time.Second)
	require.NoError(d.t, err)
	if msg.Header.Get(micro.ErrorCodeHeader) != "" {
		var er schemas.ErrorReply
		require.NoError(d.t, json.Unmarshal(msg.Data, &er), "error body: %s", msg.Data)
		return msg.Data, &er
	}
	return msg.Data, nil
}

// call sends req as JSON and decodes the reply into a T, failing on an error reply.
func call[T any](d *dev, endpoint string, req any) T {
	d.t.Helper()
	body, err := json.Marshal(req)
	require.NoError(d.t, err)
	data, er := d.request(endpoint, body)
	require.Nil(d.t, er, "%s: %+v", endpoint, er)
	var out T
	require.NoError(d.t, json.Unmarshal(data, &out))
	return out
}

// cli runs the troupe CLI against d and returns stdout, stderr and the exit code.
func (d *dev) cli(args ...string) (string, string, int) {
	d.t.Helper()
	cmd := exec.Command(troupeBin(d.t), args...)
	cmd.Dir = d.Dir
	cmd.Env = append(os.Environ(), "TROUPE_NATS_URL="+d.URL, "TROUPE_CONFIG=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(d.t, err)
	}
	return out.String(), errb.String(), code
}

// eventLog records every event a test sees, so waiting for one event never
// loses another.
type eventLog struct {
	mu     sync.Mutex
	events []schemas.Event
	added  chan struct{}
}

// events subscribes to the events that match filter (e.g. "*.*").
func (d *dev) events(filter string) *eventLog {
	l := &eventLog{added: make(chan struct{}, 1)}
	_, err := d.NC.Subscribe("troupe.events."+filter, func(m *nats.Msg) {
		var ev schemas.Event
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		l.mu.Lock()
		l.events = append(l.events, ev)
		l.mu.Unlock()
		select {
		case l.added <- struct{}{}:
		default:
		}
	})
	require.NoError(d.t, err)
	require.NoError(d.t, d.NC.Flush())
	return l
}

// all returns every event seen so far.
func (l *eventLog) all() []schemas.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// waitEvent waits, up to two minutes, for an event that matches, among all
// the events seen so far and those to come.
func waitEvent(t *testing.T, l *eventLog, match func(schemas.Event) bool) schemas.Event {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		l.mu.Lock()
		for _, ev := range l.events {
			if match(ev) {
				l.mu.Unlock()
				return ev
			}
		}
		l.mu.Unlock()
		select {
		case <-l.added:
		case <-timeout:
			t.Fatalf("no matching event within 2 minutes")
		}
	}
}

// waitJobEnd waits until job id ends and returns it.
func (d *dev) waitJobEnd(l *eventLog, id string) schemas.Job {
	d.t.Helper()
	waitEvent(d.t, l, func(ev schemas.Event) bool {
		return ev.JobID == id && (ev.Kind == schemas.EventJobDone || ev.Kind == schemas.EventJobFailed ||
			ev.Kind == schemas.EventJobCancelled || ev.Kind == schemas.EventJobBudgetExceeded)
	})
	return call[schemas.Job](d, "jobs.get", schemas.IDRequest{ID: id})
}

func writeString(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }

// proc is another troupe process (a worker, a service) started by a test.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	logs *lockedWriter
	done chan error
}

// startProc starts the troupe binary with args and extra environment; it
// is killed at the end of the test if still running.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	if len(args) > 0 && (args[0] == "worker" || args[0] == "orchestrator" || args[0] == "review") && !slices.Contains(args, "--ops-addr") {
		args = append(args, "--ops-addr", "127.0.0.1:0") // parallel tests: never the default port
	}
	if len(args) > 0 && args[0] == "review" && !slices.Contains(args, "--http") {
		args = append(args, "--http", "127.0.0.1:0") // nor the dashboard's
	}
	cmd := exec.Command(troupeBin(t), args...)
	cmd.Env = append(os.Environ(), "TROUPE_CONFIG=")
	cmd.Env = append(cmd.Env, env...)
	p := &proc{t: t, cmd: cmd, logs: &lockedWriter{w: &bytes.Buffer{}}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	require.NoError(t, cmd.Start())
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%v logs:\n%s", args, tail(p.logs.String(), 6000))
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to die.
func (p *proc) kill() {
	require.NoError(p.t, p.cmd.Process.Kill())
	<-p.done
}

// term sends SIGTERM and returns the exit code and how long it took.
func (p *proc) term(within time.Duration) (int, time.Duration) {
	start := time.Now()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return code, time.Since(start)
	case <-time.After(within):
		p.t.Fatalf("%v did not exit within %s of SIGTERM", p.cmd.Args, within)
		return -1, within
	}
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// waitLog waits until the process logs a line containing s.
func (p *proc) waitLog(s string) {
	p.t.Helper()
	require.Eventually(p.t, func() bool { return strings.Contains(p.logs.String(), s) }, 60*time.Second, 10*time.Millisecond,
		"no %q in the logs of %v", s, p.cmd.Args)
}

// reportMu serialises the lines report appends.
var reportMu sync.Mutex

// report prints a figure a test proves something by (a reconciliation, a
// recovery time) and, when TROUPE_TEST_REPORT names a file, appends it
// there: go test shows a passing package's output only with -v, and
// .ci/run prints that file at its end.
func report(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(t.Name()+": "+format, args...)
	fmt.Println(line)
	path := os.Getenv("TROUPE_TEST_REPORT")
	if path == "" {
		return
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Logf("TROUPE_TEST_REPORT: %v", err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		t.Logf("TROUPE_TEST_REPORT: %v", err)
	}
}
