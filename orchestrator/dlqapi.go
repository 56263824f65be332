package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// maxActionBatch bounds how many dead letters one filtered replay or
// discard changes; run it again for the rest.
const maxActionBatch = 1000

func listParams(f schemas.DeadLetterFilter) store.DeadLetterListParams {
	return store.DeadLetterListParams{
		Status: f.Status, Source: f.Source, Class: f.Class, Query: f.Query, JobID: f.JobID, TaskID: f.TaskID,
	}
}

func (s *Service) listDeadLetters(ctx context.Context, req schemas.DeadLetterListRequest) (any, error) {
	p := listParams(req.DeadLetterFilter)
	p.Limit = clampLimit(req.Limit, 50, 500)
	if req.Cursor != "" {
		t, id, err := bus.DecodeCursor(req.Cursor)
		if err != nil {
			return nil, bus.BadRequest("invalid_request", "cursor: %v", err)
		}
		p.Before, p.BeforeID = t, id
	}
	dls, err := s.store.DeadLetterList(ctx, p)
	if err != nil {
		return nil, err
	}
	for i := range dls {
		dls[i] = clipPayload(dls[i], listPayloadBytes)
	}
	out := schemas.DeadLetterList{DeadLetters: dls}
	if out.DeadLetters == nil {
		out.DeadLetters = []schemas.DeadLetter{}
	}
	if len(dls) == p.Limit {
		last := dls[len(dls)-1]
		out.NextCursor = bus.EncodeCursor(last.CreatedAt, last.ID)
	}
	return out, nil
}

func (s *Service) getDeadLetter(ctx context.Context, req schemas.IDRequest) (any, error) {
	d, err := s.store.DeadLetterGetByID(ctx, req.ID)
	if err != nil {
		return nil, errNoDeadLetter(req.ID, err)
	}
	if s.nc == nil {
		return d, nil
	}
	// A payload near the server's max payload (it is what could not be
	// dead-lettered whole) does not fit in the reply with the rest.
	limit := int(s.nc.MaxPayload()) - replyMargin
	for range 3 {
		body, err := json.Marshal(d)
		if err != nil || len(body) <= limit {
			break
		}
		d = clipPayload(d, len(d.Payload)-(len(body)-limit))
	}
	return d, nil
}

// listPayloadBytes bounds each payload in a list or action reply: a page
// of whole payloads could exceed the server's max payload. dlq.get gives
// one whole, or as much of it as a reply holds.
const listPayloadBytes = 4096

// replyMargin is left free under the server's max payload by a reply cut
// to fit: the micro service adds headers.
const replyMargin = 512

// clipPayload cuts d's payload to at most n bytes, at a UTF-8 boundary,
// and says its whole size in PayloadBytes.
func clipPayload(d schemas.DeadLetter, n int) schemas.DeadLetter {
	if len(d.Payload) <= n {
		return d
	}
	if d.PayloadBytes == 0 {
		d.PayloadBytes = len(d.Payload)
	}
	n = max(n, 0)
	for n > 0 && !utf8.RuneStart(d.Payload[n]) {
		n--
	}
	d.Payload = d.Payload[:n]
	return d
}

// act replays or discards one dead letter, or every open one a filter
// selects (up to maxActionBatch), for redriving after an outage.
// Who acts is the NATS user that sent the request, when the server
// vouches for it (bus.Caller.Actor).
func (s *Service) act(ctx context.Context, endpoint string, req schemas.DeadLetterAction, do func(ctx context.Context, id, by string) (schemas.DeadLetter, error)) (any, error) {
	by, err := bus.CallerOf(ctx, s.nc, s.subj.API(endpoint)).Actor(s.subj.API(endpoint), req.By, "api")
	if err != nil {
		return nil, err
	}
	reply := schemas.DeadLetterActionReply{DeadLetters: []schemas.DeadLetter{}}
	if req.ID != "" {
		d, err := do(ctx, req.ID, by)
		if err != nil {
			return nil, errNoDeadLetter(req.ID, err)
		}
		reply.DeadLetters, reply.Count = append(reply.DeadLetters, clipPayload(d, listPayloadBytes)), 1
		return reply, nil
	}
	p := listParams(*req.Filter)
	if p.Status != "" && p.Status != schemas.DeadLetterOpen {
		return nil, bus.BadRequest("invalid_request", "filter.status: only open dead letters can be replayed or discarded")
	}
	p.Status, p.Limit = schemas.DeadLetterOpen, maxActionBatch
	dls, err := s.store.DeadLetterList(ctx, p)
	if err != nil {
		return nil, err
	}
	for _, d := range dls {
		changed, err := do(ctx, d.ID, by)
		var apiErr *bus.APIError
		if errors.As(err, &apiErr) && apiErr.Code == "conflict" {
			continue // another request replayed or discarded it meanwhile
		}
		if err != nil {
			return nil, err
		}
		reply.Count++
		if len(reply.DeadLetters) < 100 {
			reply.DeadLetters = append(reply.DeadLetters, clipPayload(changed, listPayloadBytes))
		}
	}
	return reply, nil
}

func (s *Service) replayDeadLetters(ctx context.Context, req schemas.DeadLetterAction) (any, error) {
	return s.act(ctx, "dlq.replay", req, s.dl.Replay)
}

func (s *Service) discardDeadLetters(ctx context.Context, req schemas.DeadLetterAction) (any, error) {
	return s.act(ctx, "dlq.discard", req, s.dl.Discard)
}
