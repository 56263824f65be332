package imagecheck_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/imagecheck"
	"github.com/troupe-dev/troupe/internal/imagecheck/imagechecktest"
)

func encode(t *testing.T, format string, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	switch format {
	case "png":
		require.NoError(t, png.Encode(&b, img))
	case "jpeg":
		require.NoError(t, jpeg.Encode(&b, img, nil))
	case "gif":
		require.NoError(t, gif.Encode(&b, img, nil))
	}
	return b.Bytes()
}

// progressiveJPEG is the start of a progressive (SOF2) 4:4:4 JPEG of w×h
// pixels: all a header check reads.
func progressiveJPEG(w, h int) []byte {
	return []byte{0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
		0xFF, 0xC2, 0x00, 0x11, 8, byte(h >> 8), byte(h), byte(w >> 8), byte(w), 3,
		1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	rgba := image.NewRGBA(image.Rect(0, 0, 40, 30))
	rgba.Set(1, 1, color.RGBA{R: 200, A: 255})
	tests := []struct {
		name      string
		mediaType string
		data      []byte
		maxBytes  int64
		bytes     int64  // of the image found; 0 for none
		err       error  // nil, ErrNotImage or ErrTooLarge
		msg       string // in the error
	}{
		{"text as text", "text/plain", []byte("hello\n"), 0, 0, nil, ""},
		{"small png", "image/png", encode(t, "png", rgba), 0, 40 * 30 * 4, nil, ""},
		{"labels are lower case", "IMAGE/PNG", encode(t, "png", rgba), 0, 0, imagecheck.ErrNotImage,
			`the content is an image/png image, but media_type says "IMAGE/PNG"`},
		{"jpeg counts 4:4:4", "image/jpeg", encode(t, "jpeg", rgba), 0, 40 * 30 * 3, nil, ""},
		{"gif is paletted", "image/gif", encode(t, "gif", rgba), 0, 40 * 30, nil, ""},
		{"a shell script labelled png", "image/png", []byte("#!/bin/sh\nrm -rf /\n"), 0, 0, imagecheck.ErrNotImage,
			`the content is text/plain, not a PNG, JPEG, GIF or WebP image as media_type "image/png" says`},
		{"a png labelled jpeg", "image/jpeg", encode(t, "png", rgba), 0, 0, imagecheck.ErrNotImage,
			`the content is an image/png image, but media_type says "image/jpeg"`},
		{"a png labelled text", "text/plain", encode(t, "png", rgba), 0, 0, imagecheck.ErrNotImage,
			`the content is an image/png image, but media_type says "text/plain"`},
		{"an unsupported image", "image/bmp", []byte("BM\x00\x00\x00\x00"), 0, 0, imagecheck.ErrNotImage,
			"the content is an image/bmp image, not a PNG"},
		{"a broken header", "image/png", []byte("\x89PNG\r\n\x1a\n\x00\x00"), 0, 0, imagecheck.ErrNotImage,
			"the image/png header cannot be read"},
		{"16-bit RGBA 6300x6300", "image/png", imagechecktest.ZeroPNG(6300, 6300, 16, imagechecktest.RGBA), 0, 6300 * 6300 * 8,
			imagecheck.ErrTooLarge, "the image is 6300x6300 pixels of 16-bit RGBA, 318 MB decoded; at most 64 MiB may be (models.maxImageBytes)"},
		{"a 30000x30000 bomb", "image/png", imagechecktest.ZeroPNG(30000, 30000, 1, imagechecktest.Gray), 0, 30000 * 30000,
			imagecheck.ErrTooLarge, "the image is 30000x30000 pixels; a side may be at most 16384"},
		{"a limit of its own", "image/png", encode(t, "png", rgba), 40*30*4 - 1, 40 * 30 * 4, imagecheck.ErrTooLarge, "at most 4799 bytes"},
		{"interlaced png holds a pass more", "image/png", interlaced(imagechecktest.ZeroPNG(100, 10, 8, imagechecktest.RGBA)), 0, 100 * 10 * 4 * 3 / 2, nil, ""},
		{"progressive jpeg holds coefficients", "image/jpeg", progressiveJPEG(100, 10), 0, 100 * 10 * 3 * 5, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img, err := imagecheck.Check(tc.mediaType, tc.data, tc.maxBytes)
			if tc.err == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.err)
				require.ErrorContains(t, err, tc.msg)
			}
			if tc.bytes == 0 {
				require.Nil(t, img)
				return
			}
			require.NotNil(t, img)
			require.Equal(t, tc.bytes, img.Bytes)
		})
	}
}

// interlaced sets the interlace method of a PNG's header (its pixels are
// then wrong, which a header check does not read).
func interlaced(p []byte) []byte {
	p = bytes.Clone(p)
	p[28] = 1
	binary.BigEndian.PutUint32(p[29:], crc32.ChecksumIEEE(p[12:29]))
	return p
}

// TestZeroPNGDecodes: the bombs the tests make are real images.
func TestZeroPNGDecodes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ w, h, depth, ct int }{{300, 200, 16, imagechecktest.RGBA}, {3000, 1000, 1, imagechecktest.Gray}, {70, 50, 8, imagechecktest.Paletted}} {
		img, err := png.Decode(bytes.NewReader(imagechecktest.ZeroPNG(c.w, c.h, c.depth, c.ct)))
		require.NoError(t, err)
		require.Equal(t, image.Rect(0, 0, c.w, c.h), img.Bounds())
	}
}

// TestGate: no more than n enter at once; a waiter gives up when its
// context ends, and gets in once a slot is left.
func TestGate(t *testing.T) {
	t.Parallel()
	g := imagecheck.NewGate(2)
	ctx := context.Background()
	require.NoError(t, g.Enter(ctx))
	require.NoError(t, g.Enter(ctx))
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, g.Enter(cancelled), context.Canceled, "a third waits")
	g.Leave()
	require.NoError(t, g.Enter(ctx))
}
