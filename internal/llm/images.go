package llm

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"

	"github.com/disintegration/imaging"

	"github.com/troupe-dev/troupe/internal/imagecheck"
)

// DefaultMaxImageSide is the longest side, in pixels, an image is sent
// with: larger ones are scaled down first, which vision models do anyway
// and which keeps requests small.
const DefaultMaxImageSide = 1568

// defaultDecodes bounds the decodes of models built without a gate of
// their own (NewOpenAI with a Spec that names none).
var defaultDecodes = imagecheck.NewGate(imagecheck.DefaultDecodes)

// fitImage returns a with its image scaled down so its longest side is at
// most maxSide pixels (keeping its proportions), re-encoded as PNG (JPEG
// stays JPEG); an image that fits is returned as it is. The content is
// checked first, whatever maxSide says: an attachment labelled as an image
// that is none, or one whose decoded pixels would take more than maxBytes,
// is an error, which no retry fixes. Decoding waits for a slot of gate.
func fitImage(ctx context.Context, a Attachment, maxSide int, maxBytes int64, gate *imagecheck.Gate) (Attachment, error) {
	raw, err := base64.StdEncoding.DecodeString(a.Data)
	if err != nil {
		return a, fmt.Errorf("attachment %s: not base64: %w", a.Name, err)
	}
	img, err := imagecheck.Check(a.MediaType, raw, maxBytes)
	if err != nil {
		return a, fmt.Errorf("attachment %s: %w", a.Name, err)
	}
	if maxSide <= 0 || max(img.Width, img.Height) <= maxSide {
		return a, nil
	}
	if err := gate.Enter(ctx); err != nil {
		return a, err
	}
	defer gate.Leave()
	src, _, err := image.Decode(bytes.NewReader(raw))
	if err != nil {
		return a, fmt.Errorf("attachment %s: decoding the %s image: %w", a.Name, img.MediaType, err)
	}
	w, h := img.Width, img.Height
	if w >= h {
		w, h = maxSide, max(h*maxSide/w, 1)
	} else {
		w, h = max(w*maxSide/h, 1), maxSide
	}
	// imaging scales in two passes through an 8-bit image of the target
	// width and the source height (4 bytes a pixel), where x/image/draw's
	// kernels keep 32 bytes a pixel: 316 MB for a 6300-pixel-high image.
	dst := imaging.Resize(src, w, h, imaging.CatmullRom)
	var buf bytes.Buffer
	out := a
	if img.MediaType == "image/jpeg" {
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
