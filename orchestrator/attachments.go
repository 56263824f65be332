package orchestrator

import (
	"encoding/base64"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/imagecheck"
	"github.com/troupe-dev/troupe/schemas"
)

// checkAttachments refuses, by their content, attachments that a worker
// would refuse or that would exhaust its memory: content labelled as an
// image that is none (or another format), content that is an image under
// another label, and an image whose decoded pixels would take more than
// maxBytes. The schema has checked that data is base64.
func checkAttachments(atts []schemas.Attachment, maxBytes int64) error {
	for i, a := range atts {
		raw, err := base64.StdEncoding.DecodeString(a.Data)
		if err != nil {
			return bus.BadRequest("invalid_attachment", "attachments[%d].data: is not base64: %v", i, err)
		}
		if _, err := imagecheck.Check(a.MediaType, raw, maxBytes); err != nil {
			return bus.BadRequest("invalid_attachment", "attachments[%d].data: %v", i, err)
		}
	}
	return nil
}
