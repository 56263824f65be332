package bus_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
)

func TestSubjectMatches(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		filter, subject string
		want            bool
	}{
		{"troupe.tasks.*", "troupe.tasks.pm", true},
		{"troupe.tasks.*", "troupe.tasks.pm.x", false},
		{"troupe.tasks.*", "troupe.tasks", false},
		{"troupe.events.>", "troupe.events.j1.job_done", true},
		{"troupe.events.>", "troupe.events", false},
		{"troupe.events.>", "troupe.eventsx.a", false},
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{">", "a", true},
	} {
		require.Equal(t, tt.want, bus.SubjectMatches(tt.filter, tt.subject), "%s ~ %s", tt.filter, tt.subject)
	}
	streamOf := bus.Topology{Prefix: "acme.troupe"}.StreamOf()
	require.Equal(t, bus.StreamTasks, streamOf("acme.troupe.tasks.pm"))
	require.Equal(t, bus.StreamEvents, streamOf("acme.troupe.events.j.job_done"))
	require.Equal(t, bus.StreamReview, streamOf("acme.troupe.review.tester"))
	require.Equal(t, bus.StreamDLQ, streamOf("acme.troupe.dlq.workers-pm"))
	require.Equal(t, "", streamOf("troupe.tasks.pm"))
	for _, unserved := range []string{"acme.troupe.tasks.wizard", "acme.troupe.review.o1", "acme.troupe.events.j.x", "acme.troupe.dlq.x"} {
		require.Equal(t, "", streamOf(unserved), "no consumer serves %s: no stream stores it", unserved)
	}
}
