package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
)

// Sign-outs are shared by the dashboard's replicas, which accept each
// other's sessions (a shared session key): a replica publishes each session
// it revokes on <prefix>.dashboard.signed_out and applies those it hears,
// and one that starts asks the others, on <prefix>.dashboard.revocations,
// for every revocation still in force. Only when every replica restarts at
// once are sign-outs forgotten (their sessions still end with the token or
// the session key, or at expiry).

// revocation is a signed-out session: its id and when it would expire.
type revocation struct {
	Nonce   string `json:"nonce"`
	Expires int64  `json:"expires"`
}

// syncTimeout bounds how long a starting dashboard waits for another's
// revocations.
const syncTimeout = 2 * time.Second

func (s *Server) signedOutSubject() string   { return s.subj.Prefix + ".dashboard.signed_out" }
func (s *Server) revocationsSubject() string { return s.subj.Prefix + ".dashboard.revocations" }

// shareRevocations hears the other replicas' sign-outs, takes the
// revocations one of them holds, and answers those that start later.
func (s *Server) shareRevocations() error {
	if s.nc == nil {
		return nil
	}
	heard, err := s.nc.Subscribe(s.signedOutSubject(), func(m *nats.Msg) {
		var rv revocation
		if json.Unmarshal(m.Data, &rv) == nil && rv.Nonce != "" {
			s.auth.revoked.add(rv.Nonce, rv.Expires, s.auth.now())
		}
	})
	if err != nil {
		return err
	}
	s.subs = append(s.subs, heard)

	// Before answering others: this one's own (empty) answer would win.
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	reply, err := s.nc.RequestWithContext(ctx, s.revocationsSubject(), nil)
	var held []revocation
	switch {
	case err == nil:
		if err := json.Unmarshal(reply.Data, &held); err != nil {
			s.log.Warn().Err(err).Msg("another dashboard's sign-outs are unreadable; sessions signed out there stay valid here")
		}
	case errors.Is(err, nats.ErrNoResponders):
		// The first dashboard: nobody signed out yet.
	default:
		s.log.Warn().Err(err).Msg("could not ask the other dashboards for their sign-outs; sessions signed out there before this start stay valid here")
	}
	for _, rv := range held {
		if rv.Nonce != "" {
			s.auth.revoked.add(rv.Nonce, rv.Expires, s.auth.now())
		}
	}

	answer, err := s.nc.Subscribe(s.revocationsSubject(), func(m *nats.Msg) {
		if !s.cfg.Replies.Allowed(m.Subject, m.Reply) {
			return // not an inbox: nobody asked, someone aims the answer at a stream
		}
		data, _ := json.Marshal(s.auth.revoked.list(s.auth.now()))
		_ = m.Respond(data)
	})
	if err != nil {
		return err
	}
	s.subs = append(s.subs, answer)
	return nil
}

// publishRevocation tells the other replicas of a sign-out.
func (s *Server) publishRevocation(rv revocation) {
	if s.nc == nil {
		return
	}
	data, _ := json.Marshal(rv)
	if err := s.nc.Publish(s.signedOutSubject(), data); err != nil {
		s.log.Warn().Err(err).Msg("could not tell the other dashboards of a sign-out; the session stays valid there")
	}
}
