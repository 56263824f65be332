package orchestrator

import (
	"context"
	"errors"
	"fmt"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

func (s *Service) listArtifacts(ctx context.Context, req schemas.ArtifactListRequest) (any, error) {
	p := store.ArtifactListParams{Prefix: req.Prefix, JobID: req.JobID, AfterPath: req.Cursor, Limit: clampLimit(req.Limit, 100, 500)}
	arts, err := s.store.ArtifactList(ctx, p)
	if err != nil {
		return nil, err
	}
	out := schemas.ArtifactList{Artifacts: make([]schemas.Artifact, len(arts))}
	for i, a := range arts {
		out.Artifacts[i] = a.Schema()
	}
	if len(arts) == p.Limit {
		out.NextCursor = arts[len(arts)-1].Path
	}
	return out, nil
}

// maxArtifactReply keeps a reply under the server's max payload (1 MiB by
// default) with room for the JSON around the content.
const maxArtifactReply = 900 << 10

func (s *Service) getArtifact(ctx context.Context, req schemas.ArtifactGetRequest) (any, error) {
	a, err := s.store.ArtifactGet(ctx, req.Path, req.Version)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &bus.APIError{Status: 404, Code: "not_found", Message: fmt.Sprintf("path: no artifact %q (version %d)", req.Path, req.Version)}
	}
	if err != nil {
		return nil, err
	}
	if len(a.Content) > maxArtifactReply {
		return nil, &bus.APIError{Status: 413, Code: "too_large", Message: fmt.Sprintf("artifact %s is %d bytes, more than a reply may carry", a.Path, len(a.Content))}
	}
	return a.Schema(), nil
}
