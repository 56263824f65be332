package bus

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/schemas"
)

// serveActor serves reviews.decide (and reviews.decide.<user>) on nc,
// answering with the name the decision would be recorded under.
func serveActor(t *testing.T, nc *nats.Conn) {
	t.Helper()
	subj := Subjects{Prefix: DefaultPrefix}
	ep := EndpointConfig{Ctx: context.Background(), Log: zerolog.New(zerolog.NewTestWriter(t)), Timeout: 5 * time.Second}
	h := Endpoint(ep, schemas.SchemaReviewDecision, func(ctx context.Context, d schemas.ReviewDecision) (any, error) {
		who, err := CallerOf(ctx, nc, subj.API("reviews.decide")).Actor(subj.API("reviews.decide"), d.Reviewer, "anonymous")
		return map[string]string{"actor": who}, err
	})
	svc, err := micro.AddService(nc, micro.Config{Name: ServiceName, Version: "0.0.1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	g := svc.AddGroup("troupe.api.reviews")
	require.NoError(t, g.AddEndpoint("decide", h))
	require.NoError(t, g.AddEndpoint("decide_as", h, micro.WithEndpointSubject("decide.*")))
	require.NoError(t, nc.Flush(), "the server has the subscriptions before anyone asks")
}

// decideAs sends a decision claiming reviewer, as the connection's user,
// and returns the name it would be recorded under.
func decideAs(nc *nats.Conn, reviewer string) (string, error) {
	var got map[string]string
	err := Request(context.Background(), nc, Subjects{Prefix: DefaultPrefix}.APIAs("reviews.decide", UserOf(nc)),
		schemas.ReviewDecision{OutputID: "o", Decision: "promote", Reviewer: reviewer}, &got)
	return got["actor"], err
}

// TestActorIsTheAuthenticatedUser: under troupe nats-config's users a
// decision is recorded under the NATS user that sent it, whatever its body
// claims; a person cannot send as another, nor read another's replies;
// only the review service's user (the dashboard) names the person.
// Without authorization, the name claimed is recorded.
func TestActorIsTheAuthenticatedUser(t *testing.T) {
	t.Parallel()
	topo := Topology{Roles: []string{"developer"}, People: []Person{{Name: "ada", Decides: true}, {Name: "bob"}}}
	var users []*server.User
	for _, u := range topo.Users() {
		users = append(users, &server.User{Username: u.Name, Password: "pw-" + u.Name, Permissions: permissions(u.Permissions)})
	}
	srv := authServer(t, users, nil)
	as := func(user string) *nats.Conn {
		nc, err := connectWith(t, srv.ClientURL(), config.NATS{User: user, Password: "pw-" + user})
		require.NoError(t, err)
		return nc
	}
	review := as("review")
	serveActor(t, review)

	ada := as("ada")
	who, err := decideAs(ada, "")
	require.NoError(t, err)
	require.Equal(t, "ada", who)
	who, err = decideAs(ada, "ada")
	require.NoError(t, err)
	require.Equal(t, "ada", who)
	_, err = decideAs(ada, "mallory")
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, "forbidden", apiErr.Code)
	require.Contains(t, apiErr.Message, `"mallory" is not who sends this`)

	// Another's name, or none, is refused by the server.
	ctx := context.Background()
	for _, subject := range []string{"troupe.api.reviews.decide.bob", "troupe.api.reviews.decide.review", "troupe.api.reviews.decide"} {
		err := Request(ctx, ada, subject, schemas.ReviewDecision{OutputID: "o", Decision: "promote"}, nil)
		require.True(t, IsDenied(err), "%s: %v", subject, err)
	}
	// bob reads and submits: he decides nothing, and reads none of ada's
	// replies.
	opts, err := ConnectOptions(config.NATS{User: "bob", Password: "pw-bob"})
	require.NoError(t, err)
	bob, _, err := Connect(srv.ClientURL(), "bob", zerolog.New(zerolog.NewTestWriter(t)), append(opts, nats.PermissionErrOnSubscribe(true))...)
	require.NoError(t, err)
	t.Cleanup(bob.Close)
	_, err = decideAs(bob, "")
	require.True(t, IsDenied(err), "%v", err)
	sub, err := bob.SubscribeSync("_INBOX.ada.>")
	require.NoError(t, err)
	require.NoError(t, bob.Flush())
	_, err = sub.NextMsg(5 * time.Second)
	require.ErrorIs(t, err, nats.ErrPermissionViolation)

	// The dashboard, on the review service's user, names the person
	// signed in to it.
	who, err = decideAs(review, "grace")
	require.NoError(t, err)
	require.Equal(t, "grace", who)
	// The shared reviewer user is recorded as such.
	who, err = decideAs(as("reviewer"), "")
	require.NoError(t, err)
	require.Equal(t, "reviewer", who)
}

func TestActorWithoutAuthorization(t *testing.T) {
	t.Parallel()
	js, _ := setup(t)
	serveActor(t, js.Conn())
	who, err := decideAs(js.Conn(), "mallory")
	require.NoError(t, err)
	require.Equal(t, "mallory", who, "no authorization: the name claimed")
	who, err = decideAs(js.Conn(), "")
	require.NoError(t, err)
	require.Equal(t, "anonymous", who)
}
