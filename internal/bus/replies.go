package bus

import (
	"strings"

	"github.com/rs/zerolog"
)

// DefaultReplyPrefix starts every inbox a NATS client makes unless told
// otherwise, and every inbox troupe nats-config gives its users.
const DefaultReplyPrefix = "_INBOX."

// Replies decides which reply subjects a service answers on. A request
// names its reply subject, and nothing stops it from naming a stream's
// (troupe.tasks.pm, troupe.events.<job>.output_promoted) or an
// advisory's: answering it would publish the service's reply there, under
// the service's rights. Services answer on inboxes only, and drop, log and
// count the rest; under troupe nats-config's users the server refuses
// them too (services may publish on _INBOX.> only), and so without any
// authorization (troupe dev) this check is what holds.
type Replies struct {
	// Prefixes a reply subject may start with. Defaults to "_INBOX.".
	Prefixes []string
	// Log is where a refused reply subject is logged.
	Log zerolog.Logger
	// Refused, when set, counts each refused reply (a metric).
	Refused func(subject string)
}

// Allowed reports whether a request on subject may be answered on reply.
// A request that is refused is logged, with both subjects, and counted.
// A request with no reply subject is refused too: nothing waits for it.
func (r Replies) Allowed(subject, reply string) bool {
	prefixes := r.Prefixes
	if len(prefixes) == 0 {
		prefixes = []string{DefaultReplyPrefix}
	}
	for _, p := range prefixes {
		if !strings.HasSuffix(p, ".") {
			p += "." // "_INBOX.ada" covers _INBOX.ada.x, not _INBOX.adam.x
		}
		if strings.HasPrefix(reply, p) && len(reply) > len(p) && !strings.ContainsAny(reply, "*>") {
			return true
		}
	}
	r.Log.Warn().Str("subject", subject).Str("reply_subject", reply).Strs("reply_prefixes", prefixes).
		Msg("a request whose reply subject is not an inbox: dropped, not answered")
	if r.Refused != nil {
		r.Refused(subject)
	}
	return false
}
