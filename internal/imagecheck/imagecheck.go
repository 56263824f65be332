// Package imagecheck tells what an attachment is by its content, not by its
// label, and what decoding it would cost, so that an image that would
// exhaust memory is refused before anything decodes it: at submission, and
// again by the worker (a message may be forged or older than the check).
// Gate bounds how many images a process decodes at once.
//
// An image is one of the formats the decoders linked here read (PNG, JPEG,
// GIF, WebP). Its header gives its size and pixel format, and so the bytes
// its decoded pixels take; that, not the size of the file, is what a small
// file can inflate (a 146 KB PNG can claim 30000×30000 pixels).
package imagecheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"net/http"
	"strings"

	_ "image/gif"  // decoders for attachments
	_ "image/jpeg" // decoders for attachments
	_ "image/png"  // decoders for attachments

	_ "golang.org/x/image/webp" // decoders for attachments
)

// DefaultMaxBytes is how many bytes the decoded pixels of one image may take
// when the configuration says nothing (models.maxImageBytes): 64 MiB holds
// a 24-megapixel photo (JPEG, 4:2:0), a 5K screenshot (8-bit RGBA) or a
// 16-megapixel PNG, far more than the 1568 pixels a side vision models
// see; the 16-bit 6300×6300 RGBA PNG (320 MB) that made a worker reach
// 2.6 GB is refused.
const DefaultMaxBytes int64 = 64 << 20

// MaxSide is the longest side, in pixels, an image may have, whatever its
// bytes: scaling it down needs memory in proportion to its longest side.
const MaxSide = 16384

// DefaultDecodes is how many images one process decodes at once when the
// configuration says nothing (models.imageDecodes).
const DefaultDecodes = 2

// ErrNotImage matches a refusal because the content is not an image of a
// supported format, or not the one its label says.
var ErrNotImage = errors.New("not a supported image")

// ErrTooLarge matches a refusal because the image would take too much
// memory to decode.
var ErrTooLarge = errors.New("image too large to decode")

// Supported lists the media types of the images Troupe decodes.
var Supported = []string{"image/png", "image/jpeg", "image/gif", "image/webp"}

// Image is what an image's header says.
type Image struct {
	// MediaType is the format found in the content, one of Supported.
	MediaType string
	// Width and Height are in pixels.
	Width, Height int
	// Pixel names the pixel format, such as "16-bit RGBA".
	Pixel string
	// Bytes is about what decoding it takes: its pixels and, where the
	// decoder keeps more (progressive JPEG, interlaced PNG, lossless
	// WebP), that too.
	Bytes int64
}

// Check reads what data is. Content that is not an image, labelled with a
// media type that does not say image either, is no image and no error (a
// nil *Image). Otherwise the content must be an image of a supported format,
// the one mediaType names, whose decoded bytes are at most maxBytes
// (DefaultMaxBytes when 0) and whose sides are at most MaxSide. The error
// says what is wrong with the data (matching ErrNotImage or ErrTooLarge),
// for the caller to prefix with the field.
func Check(mediaType string, data []byte, maxBytes int64) (*Image, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	// Labels are compared as written, not folded: a worker sends as
	// images the attachments whose media type starts "image/", naming
	// the type to the provider as given.
	sniffed := sniff(data)
	labelled := strings.HasPrefix(mediaType, "image/")
	switch {
	case sniffed == "" && !labelled:
		return nil, nil
	case sniffed == "":
		return nil, fmt.Errorf("%w: the content is %s, not a PNG, JPEG, GIF or WebP image as media_type %q says", ErrNotImage, describe(data), mediaType)
	case sniffed != mediaType:
		return nil, fmt.Errorf("%w: the content is an %s image, but media_type says %q", ErrNotImage, sniffed, mediaType)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: the %s header cannot be read: %v", ErrNotImage, sniffed, err)
	}
	img := &Image{MediaType: sniffed, Width: cfg.Width, Height: cfg.Height}
	perPixel, pixel := pixelBytes(sniffed, cfg.ColorModel)
	img.Pixel = pixel
	// Twice the bytes per pixel, to keep halves (4:2:0 chroma) whole.
	double := int64(cfg.Width) * int64(cfg.Height) * perPixel
	switch {
	case sniffed == "image/png" && pngInterlaced(data):
		double = double * 3 / 2 // the decoder holds a pass beside the image
	case sniffed == "image/jpeg" && jpegProgressive(data):
		double *= 5 // 4 bytes of coefficients for every byte of a sample
	}
	img.Bytes = (double + 1) / 2
	if cfg.Width > MaxSide || cfg.Height > MaxSide {
		return img, fmt.Errorf("%w: the image is %dx%d pixels; a side may be at most %d", ErrTooLarge, cfg.Width, cfg.Height, MaxSide)
	}
	if img.Bytes > maxBytes {
		return img, fmt.Errorf("%w: the image is %dx%d pixels of %s, %s decoded; at most %s may be (models.maxImageBytes)",
			ErrTooLarge, cfg.Width, cfg.Height, pixel, size(img.Bytes), size(maxBytes))
	}
	return img, nil
}

// sniff returns the supported media type data starts like, or "".
func sniff(data []byte) string {
	switch t := http.DetectContentType(data); t {
	case "image/png", "image/jpeg", "image/gif", "image/webp":
		return t
	}
	return ""
}

// describe says what content that is no supported image looks like, by
// the WHATWG sniffing rules: "text/plain", "an image/bmp image".
func describe(data []byte) string {
	t, _, _ := strings.Cut(http.DetectContentType(data), ";")
	if strings.HasPrefix(t, "image/") {
		return "an " + t + " image"
	}
	return t
}

// pixelBytes returns twice the bytes a decoded pixel takes in the format and
// colour model, and the pixel format's name. A colour model not known here
// counts as the largest, 8 bytes.
func pixelBytes(mediaType string, cm color.Model) (int64, string) {
	if _, ok := cm.(color.Palette); ok {
		return 2, "paletted colour"
	}
	switch cm {
	case color.GrayModel:
		return 2, "8-bit grey"
	case color.Gray16Model:
		return 4, "16-bit grey"
	case color.RGBAModel, color.NRGBAModel:
		if mediaType == "image/webp" {
			return 16, "lossless RGBA" // decoded beside its pixels' first form
		}
		return 8, "8-bit RGBA"
	case color.RGBA64Model, color.NRGBA64Model:
		return 16, "16-bit RGBA"
	case color.CMYKModel:
		return 8, "CMYK"
	case color.YCbCrModel:
		if mediaType == "image/webp" {
			return 3, "YCbCr 4:2:0"
		}
		return 6, "YCbCr" // JPEG may be 4:4:4
	case color.NYCbCrAModel:
		return 5, "YCbCr with alpha"
	}
	return 16, "an unknown pixel format"
}

// pngInterlaced reads the interlace method of a PNG's IHDR, the first chunk
// (the decoder has checked it is there).
func pngInterlaced(data []byte) bool {
	const at = 8 + 4 + 4 + 12 // signature, length, "IHDR", then width to filter
	return len(data) > at && data[at] != 0
}

// jpegProgressive tells whether a JPEG's frame is progressive (SOF2, the
// only progressive one the decoder reads), walking the segments before it.
func jpegProgressive(data []byte) bool {
	for i := 2; i+4 <= len(data); {
		if data[i] != 0xFF {
			return false
		}
		m := data[i+1]
		switch {
		case m == 0xFF: // fill byte
			i++
			continue
		case m == 0xC2:
			return true
		case m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC:
			return false // another frame type
		}
		i += 2 + (int(data[i+2])<<8 | int(data[i+3]))
	}
	return false
}

func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1e6:
		return fmt.Sprintf("%.0f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Gate bounds how many images a process decodes at once: decoding holds an
// image's pixels, up to the decoded bytes Check allows, until it is scaled
// and encoded again.
type Gate struct{ slots chan struct{} }

// NewGate returns a gate for n decodes at once (DefaultDecodes when n <= 0).
func NewGate(n int) *Gate {
	if n <= 0 {
		n = DefaultDecodes
	}
	return &Gate{slots: make(chan struct{}, n)}
}

// Enter waits for a slot, or for ctx to end (its error). Leave gives the
// slot back.
func (g *Gate) Enter(ctx context.Context) error {
	select {
	case g.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Leave gives back a slot taken by Enter.
func (g *Gate) Leave() { <-g.slots }
