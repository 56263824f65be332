package llm

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"

	_ "golang.org/x/image/webp"
	_ "image/gif" // decoders for attachments

	"golang.org/x/image/draw"
)

// DefaultMaxImageSide is the longest side, in pixels, an image is sent
// with: larger ones are scaled down first, which vision models do anyway
// and which keeps requests small.
const DefaultMaxImageSide = 1568

// maxImagePixels bounds what fitImage decodes: a small file can claim a
// huge canvas, and decoding it would exhaust memory.
const maxImagePixels = 40_000_000

// fitImage returns a with its image scaled down so its longest side is at
// most maxSide pixels (keeping its proportions), re-encoded as PNG (JPEG
// stays JPEG). An image that fits, or that cannot be decoded, is returned
// as it is: the provider then says what is wrong with it.
func fitImage(a Attachment, maxSide int) (Attachment, error) {
	if maxSide <= 0 {
		return a, nil
	}
	raw, err := base64.StdEncoding.DecodeString(a.Data)
	if err != nil {
		return a, fmt.Errorf("attachment %s: not base64: %w", a.Name, err)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(raw))
	if err != nil {
		return a, nil
	}
	if cfg.Width*cfg.Height > maxImagePixels {
		return a, fmt.Errorf("attachment %s: %dx%d pixels is more than the %d an image may have", a.Name, cfg.Width, cfg.Height, maxImagePixels)
	}
	if max(cfg.Width, cfg.Height) <= maxSide {
		return a, nil
	}
	src, _, err := image.Decode(bytes.NewReader(raw))
	if err != nil {
		return a, nil
	}
	w, h := cfg.Width, cfg.Height
	if w >= h {
		w, h = maxSide, max(h*maxSide/w, 1)
	} else {
		w, h = max(w*maxSide/h, 1), maxSide
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Over, nil)
	var buf bytes.Buffer
	out := a
	if a.MediaType == "image/jpeg" {
		err = jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 85})
	} else {
		out.MediaType = "image/png"
		err = png.Encode(&buf, dst)
	}
	if err != nil {
		return a, fmt.Errorf("attachment %s: re-encoding: %w", a.Name, err)
	}
	out.Data = base64.StdEncoding.EncodeToString(buf.Bytes())
	return out, nil
}
