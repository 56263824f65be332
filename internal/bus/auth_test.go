package bus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/config"
)

// authServer starts a server with JetStream whose users are those given.
func authServer(t *testing.T, users []*server.User, edit func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true, Users: users}
	if edit != nil {
		edit(opts)
	}
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	go srv.Start()
	require.True(t, srv.ReadyForConnections(10*time.Second))
	t.Cleanup(srv.Shutdown)
	return srv
}

func connectWith(t *testing.T, url string, c config.NATS) (*nats.Conn, error) {
	t.Helper()
	opts, err := ConnectOptions(c)
	require.NoError(t, err)
	nc, _, err := Connect(url, "test", zerolog.New(zerolog.NewTestWriter(t)), opts...)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

func TestConnectWithCredentials(t *testing.T) {
	t.Parallel()
	srv := authServer(t, []*server.User{{Username: "alice", Password: "s3cret"}}, nil)
	url := srv.ClientURL()

	nc, err := connectWith(t, url, config.NATS{User: "alice", Password: "s3cret"})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(nc.NewRespInbox(), "_INBOX.alice."), "a user's inbox is its own: %s", nc.NewRespInbox())

	// Credentials in the URL keep working, and their user names the inbox.
	withCreds := strings.Replace(url, "nats://", "nats://alice:s3cret@", 1)
	nc, err = connectWith(t, withCreds, config.NATS{URL: withCreds})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(nc.NewRespInbox(), "_INBOX.alice."))
	nc, err = connectWith(t, url, config.NATS{User: "alice", Password: "s3cret", InboxPrefix: "_INBOX.custom"})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(nc.NewRespInbox(), "_INBOX.custom."))

	// A refusal names the server, never the password.
	wrong := strings.Replace(url, "nats://", "nats://alice:hunter2@", 1)
	_, err = connectWith(t, wrong, config.NATS{URL: wrong})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2")
	require.Contains(t, err.Error(), "nats://***@127.0.0.1")
	_, err = connectWith(t, url, config.NATS{User: "alice", Password: "hunter2"})
	require.ErrorContains(t, err, "Authorization Violation")

	// No user, no inbox of its own.
	opts, err := ConnectOptions(config.NATS{URL: "nats://127.0.0.1:4222"})
	require.NoError(t, err)
	require.Empty(t, opts)
}

func TestConnectWithToken(t *testing.T) {
	t.Parallel()
	srv := authServer(t, nil, func(o *server.Options) { o.Authorization = "tok-123" })
	_, err := connectWith(t, srv.ClientURL(), config.NATS{Token: "tok-123"})
	require.NoError(t, err)
	_, err = connectWith(t, srv.ClientURL(), config.NATS{Token: "nope"})
	require.Error(t, err)
	_, err = ConnectOptions(config.NATS{NKeyFile: filepath.Join(t.TempDir(), "missing.nk")})
	require.ErrorContains(t, err, "nats.nkeyFile")
}

func TestConnectWithTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, caKey := newCert(t, dir, "ca", nil, nil, nil)
	newCert(t, dir, "server", ca, caKey, []string{"127.0.0.1"})
	newCert(t, dir, "client", ca, caKey, nil)
	file := func(name string) string { return filepath.Join(dir, name) }
	tlsConfig, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: file("server.pem"), KeyFile: file("server-key.pem"), CaFile: file("ca.pem"), Verify: true,
	})
	require.NoError(t, err)
	srv := authServer(t, nil, func(o *server.Options) { o.TLS, o.TLSConfig, o.TLSVerify = true, tlsConfig, true })

	_, err = connectWith(t, srv.ClientURL(), config.NATS{TLS: config.TLS{CAFile: file("ca.pem"), CertFile: file("client.pem"), KeyFile: file("client-key.pem")}})
	require.NoError(t, err)
	_, err = connectWith(t, srv.ClientURL(), config.NATS{TLS: config.TLS{CAFile: file("ca.pem")}})
	require.Error(t, err, "the server verifies clients")
	_, err = connectWith(t, srv.ClientURL(), config.NATS{TLS: config.TLS{CertFile: file("client.pem"), KeyFile: file("client-key.pem")}})
	require.Error(t, err, "the server's certificate is not from a CA the system knows")
}

// newCert writes name.pem and name-key.pem to dir: a CA when parent is
// nil, else a certificate parent signed for hosts.
func newCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, hosts []string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(h))
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert, key
}

// permissions turns a Topology user into the server's.
func permissions(p *Permissions) *server.Permissions {
	if p == nil {
		return nil
	}
	return &server.Permissions{Publish: &server.SubjectPermission{Allow: p.Publish}, Subscribe: &server.SubjectPermission{Allow: p.Subscribe}}
}

// TestRestrictedUsers: under the users Topology.Users describes, a worker
// is refused what it may not do at once, not after a timeout; it cannot
// create the topology, but can check it once the orchestrator did.
func TestRestrictedUsers(t *testing.T) {
	t.Parallel()
	topo := Topology{Roles: []string{"developer", "tester"}, AckWait: 2 * time.Second}
	var users []*server.User
	for _, u := range topo.Users() {
		users = append(users, &server.User{Username: u.Name, Password: "pw-" + u.Name, Permissions: permissions(u.Permissions)})
	}
	srv := authServer(t, users, nil)
	as := func(user string) (*nats.Conn, error) {
		return connectWith(t, srv.ClientURL(), config.NATS{User: user, Password: "pw-" + user})
	}
	ctx := context.Background()
	dev, err := as("worker-developer")
	require.NoError(t, err)
	devJS, err := jetstream.New(dev)
	require.NoError(t, err)

	start := time.Now()
	err = topo.Ensure(ctx, devJS)
	require.True(t, IsDenied(err), "%v", err)
	require.ErrorContains(t, err, `creating stream TROUPE_TASKS: nats: permissions violation: Permissions Violation for Publish to "$JS.API.STREAM.UPDATE.TROUPE_TASKS"`)
	require.Less(t, time.Since(start), 5*time.Second, "refused at once")
	own := ConsumerRef{Stream: StreamTasks, Consumer: "workers-developer"}
	require.ErrorContains(t, topo.CheckConsumers(ctx, devJS, own), "stream TROUPE_TASKS does not exist")

	orch, err := as("orchestrator")
	require.NoError(t, err)
	orchJS, err := jetstream.New(orch)
	require.NoError(t, err)
	developerOnly := topo
	developerOnly.Roles = []string{"developer"}
	require.NoError(t, developerOnly.Ensure(ctx, orchJS), "the orchestrator creates streams and consumers")
	require.NoError(t, topo.CheckConsumers(ctx, devJS, own))
	tester, err := as("worker-tester")
	require.NoError(t, err)
	testerJS, err := jetstream.New(tester)
	require.NoError(t, err)
	testers := ConsumerRef{Stream: StreamTasks, Consumer: "workers-tester"}
	require.ErrorContains(t, topo.CheckConsumers(ctx, testerJS, testers), "consumer workers-tester of stream TROUPE_TASKS does not exist")
	require.NoError(t, topo.Ensure(ctx, orchJS), "and updates them")
	require.NoError(t, topo.CheckConsumers(ctx, testerJS, testers))
	// Checking what the user may not look at is refused at once too.
	start = time.Now()
	err = topo.CheckConsumers(ctx, devJS, testers)
	require.True(t, IsDenied(err), "%v", err)
	require.Less(t, time.Since(start), 5*time.Second)

	start = time.Now()
	err = Request(ctx, dev, "troupe.api.reviews.decide", map[string]string{"output_id": "x"}, nil)
	require.True(t, IsDenied(err), "%v", err)
	require.ErrorContains(t, err, `Publish to "troupe.api.reviews.decide"`)
	require.Less(t, time.Since(start), 5*time.Second, "refused at once")
	cli, err := as("client")
	require.NoError(t, err)
	require.ErrorIs(t, Request(ctx, cli, "troupe.api.jobs.submit", nil, nil), nats.ErrNoResponders, "a permitted request is not refused")
}

// TestServicesAnswerInboxesOnly: under the users Topology.Users
// describes, no user but the admin may publish on an advisory subject,
// and a service answering a request whose reply subject is a stream's or
// an advisory's is refused by the server (no allow_responses): it may
// answer on inboxes only.
func TestServicesAnswerInboxesOnly(t *testing.T) {
	t.Parallel()
	topo := Topology{Roles: []string{"developer"}}
	forged := []string{
		"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TROUPE_EVENTS.orchestrator",
		"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TROUPE_TASKS.workers-developer",
	}
	var users []*server.User
	for _, u := range topo.Users() {
		users = append(users, &server.User{Username: u.Name, Password: "pw-" + u.Name, Permissions: permissions(u.Permissions)})
		if u.Permissions == nil {
			continue
		}
		for _, allowed := range u.Permissions.Publish {
			for _, f := range forged {
				require.False(t, SubjectMatches(allowed, f), "%s may publish %s (%s)", u.Name, f, allowed)
			}
		}
	}
	srv := authServer(t, users, nil)
	denied := make(chan error, 8)
	conn := func(user string) *nats.Conn {
		opts, err := ConnectOptions(config.NATS{User: user, Password: "pw-" + user})
		require.NoError(t, err)
		nc, _, err := Connect(srv.ClientURL(), "test-"+user, zerolog.New(zerolog.NewTestWriter(t)), append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			denied <- err
		}))...)
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	admin, worker, client := conn("admin"), conn("worker-developer"), conn("client")

	for _, subject := range append([]string{"troupe.tasks.tester"}, forged...) {
		require.NoError(t, worker.Publish(subject, []byte(`{}`)))
		require.ErrorContains(t, <-denied, `Publish to "`+subject+`"`)
	}

	// The worker answers pings; a ping whose reply subject is a stream's
	// (the worker's own review subject, which it may publish on) or an
	// advisory's gets no answer there.
	for _, reply := range append([]string{"troupe.dlq.x", "troupe.events.j1.output_promoted"}, forged...) {
		leaked := make(chan *nats.Msg, 1)
		leak, err := admin.ChanSubscribe(reply, leaked)
		require.NoError(t, err)
		require.NoError(t, admin.Flush())
		pings, err := worker.SubscribeSync("troupe.workers.ping")
		require.NoError(t, err)
		require.NoError(t, worker.Flush())
		require.NoError(t, client.PublishRequest("troupe.workers.ping", reply, nil))
		m, err := pings.NextMsg(10 * time.Second)
		require.NoError(t, err)
		require.NoError(t, m.Respond([]byte(`{}`)))
		select {
		case err := <-denied:
			require.ErrorContains(t, err, `Publish to "`+reply+`"`, "the server refuses the answer")
		case m := <-leaked:
			t.Fatalf("the answer reached %s: %s", reply, m.Data)
		}
		require.NoError(t, admin.Flush())
		require.Empty(t, leaked, "nothing reached %s", reply)
		require.NoError(t, leak.Unsubscribe())
		require.NoError(t, pings.Unsubscribe())
	}
	// An inbox gets its answer.
	pings, err := worker.SubscribeSync("troupe.workers.ping")
	require.NoError(t, err)
	require.NoError(t, worker.Flush())
	go func() {
		if m, err := pings.NextMsg(10 * time.Second); err == nil {
			_ = m.Respond([]byte(`{"id":"w"}`))
		}
	}()
	answer, err := client.Request("troupe.workers.ping", nil, 10*time.Second)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"w"}`, string(answer.Data))
}
