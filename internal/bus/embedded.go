package bus

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures a NATS server run inside the process.
type EmbeddedConfig struct {
	// Dir holds JetStream's files. Required.
	Dir string
	// Host to listen on. Defaults to 127.0.0.1.
	Host string
	// Port to listen on. Defaults to 4222; when that port is taken a free
	// one is used and PortFallback says so. -1 picks a free port directly.
	Port int
	// SyncAlways fsyncs every JetStream write when true (the default of
	// troupe dev); when false the server's periodic sync applies.
	SyncAlways bool
	// MaxPayload bounds a message. Defaults to 1 MiB, the server's default.
	MaxPayload int32
}

// Embedded is a running in-process NATS server.
type Embedded struct {
	srv *server.Server
	// PortFallback is true when the configured port was taken and another was used.
	PortFallback bool
	// WantedPort is the port that was asked for.
	WantedPort int
}

// StartEmbedded starts a NATS server with JetStream on disk and waits until
// it accepts connections.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedded nats: dir is required")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = 4222
	}
	e := &Embedded{WantedPort: cfg.Port}
	port := cfg.Port
	if port > 0 && !portFree(cfg.Host, port) {
		port = -1
		e.PortFallback = true
	}
	opts := &server.Options{
		ServerName:         "troupe-embedded",
		Host:               cfg.Host,
		Port:               port,
		JetStream:          true,
		StoreDir:           cfg.Dir,
		SyncAlways:         cfg.SyncAlways,
		NoSigs:             true,
		NoLog:              true,
		MaxPayload:         cfg.MaxPayload,
		JetStreamMaxMemory: 64 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	e.srv = srv
	return e, nil
}

// ClientURL is the URL clients connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits until it has stopped.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

func portFree(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
