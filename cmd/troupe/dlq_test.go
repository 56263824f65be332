package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
)

// TestPrintDeadLetterSaysWhatThePayloadIs: dlq show says when it shows only
// the beginning of a payload, and when the payload is base64.
func TestPrintDeadLetterSaysWhatThePayloadIs(t *testing.T) {
	t.Parallel()
	d := schemas.DeadLetter{ID: "d-1", Source: "review", Subject: "troupe.review.pm", Reason: "bad", Class: "permanent",
		Attempts: 1, CreatedAt: time.Now(), Status: schemas.DeadLetterOpen, Payload: `{"padding":"xx`}
	var out bytes.Buffer
	printDeadLetter(&out, d, nil)
	require.NotContains(t, out.String(), "payload:")

	d.PayloadBytes = 1 << 20
	out.Reset()
	printDeadLetter(&out, d, nil)
	require.Contains(t, out.String(), "payload:   the first 14 of 1048576 bytes")

	d.PayloadBytes, d.Payload, d.Headers = 0, "AP/+", map[string]string{bus.HeaderPayloadEncoding: "base64"}
	out.Reset()
	printDeadLetter(&out, d, nil)
	require.Contains(t, out.String(), "payload:   base64 below")
}
