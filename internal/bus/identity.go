package bus

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
)

// Who did what: a request's body can claim any name, and its reply subject
// any inbox, so neither says who sent it. The publish permissions of the
// server do: the endpoints that record who acts (ActingEndpoints) are
// served on <endpoint>.<user> as well, and each least-privilege user may
// send them on its own name only (troupe nats-config). A service then
// reads the sender from the subject, and believes it when the server
// requires authorization. Without authorization (troupe dev) anyone may
// send anything, and the name a request claims is recorded as given.

// ActingEndpoints record who sends them: a decision's reviewer, who
// replayed or discarded a dead letter.
var ActingEndpoints = []string{"reviews.decide", "dlq.replay", "dlq.discard"}

// Delegate is the NATS user that may act for the people it signed in
// itself: the review service's, which the dashboard in its process uses.
// A request it sends is recorded under the name its body gives.
const Delegate = UserReview

// APIAs is the subject of an endpoint sent by user: the endpoint's own
// subject for an acting endpoint and a user, <endpoint>.<user>; else the
// endpoint's subject.
func (s Subjects) APIAs(endpoint, user string) string {
	if user == "" || !slices.Contains(ActingEndpoints, endpoint) {
		return s.API(endpoint)
	}
	return s.API(endpoint) + "." + user
}

// UserOf is the NATS user a connection authenticated as, given as a user
// name (Connect with nats.UserInfo, or in the URL), or "" for none.
func UserOf(nc *nats.Conn) string {
	if nc.Opts.User != "" {
		return nc.Opts.User
	}
	for _, raw := range append([]string{nc.Opts.Url}, nc.Opts.Servers...) {
		first, _, _ := strings.Cut(raw, ",")
		if u, err := url.Parse(strings.TrimSpace(first)); err == nil && u.User != nil && u.User.Username() != "" {
			return u.User.Username()
		}
	}
	return ""
}

// Caller is who sent an API request.
type Caller struct {
	// User is the NATS user the request's subject names, "" when it was
	// sent on the endpoint's own subject.
	User string
	// Vouched reports whether the server vouches for User: it requires
	// authorization, so only User may send on its name.
	Vouched bool
}

type subjectKey struct{}

// CallerOf returns who sent the request ctx belongs to (an Endpoint's),
// whose endpoint's own subject is base, received on nc.
func CallerOf(ctx context.Context, nc *nats.Conn, base string) Caller {
	subject, _ := ctx.Value(subjectKey{}).(string)
	user, _ := strings.CutPrefix(subject, base+".")
	if user == subject {
		user = ""
	}
	return Caller{User: user, Vouched: nc != nil && nc.AuthRequired()}
}

// Actor is the name an acting request is recorded under: who the server
// vouches sent it, or for the Delegate (the dashboard) the name it claims;
// without authorization, the name claimed, else the subject's, else
// fallback. A claim that contradicts a vouched sender is refused, and so
// is a request that names no sender where the server requires
// authorization: nobody could say who sent it.
func (c Caller) Actor(endpoint, claimed, fallback string) (string, error) {
	switch {
	case !c.Vouched:
		return cmp.Or(claimed, c.User, fallback), nil
	case c.User == "":
		return "", &APIError{Status: 403, Code: "forbidden", Message: fmt.Sprintf(
			"%s records who sends it: send it on %s.<your NATS user> (troupe does), which the server lets only that user publish", endpoint, endpoint)}
	case c.User == Delegate:
		return cmp.Or(claimed, c.User), nil
	case claimed != "" && claimed != c.User:
		return "", &APIError{Status: 403, Code: "forbidden", Message: fmt.Sprintf(
			"%q is not who sends this: it is recorded under the NATS user that sends it, %q", claimed, c.User)}
	}
	return c.User, nil
}
