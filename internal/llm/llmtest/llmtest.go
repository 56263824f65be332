// Package llmtest provides a fake OpenAI-compatible chat-completions server
// for tests. It speaks enough of the real protocol that the official
// go-openai client works against it, and it validates each request the way
// the real API does (authentication, model, messages, image parts, limits).
package llmtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	_ "image/gif"  // register GIF decoder for image.DecodeConfig
	_ "image/jpeg" // register JPEG decoder for image.DecodeConfig
	_ "image/png"  // register PNG decoder for image.DecodeConfig
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Model is a model the fake server knows about.
type Model struct {
	ID        string
	Images    bool // accepts image_url content parts
	MaxTokens int  // upper bound for max_tokens / max_completion_tokens; 0 means unlimited
}

// Reply scripts one answer of the server.
type Reply struct {
	// A normal answer. If both token counts are 0 they are estimated
	// (len/4, at least 1).
	Content          string
	PromptTokens     int
	CompletionTokens int

	// Status, when non-zero and not 200, makes the server answer with an
	// OpenAI error JSON: 429 is a rate-limit error (RetryAfter, if set, is
	// sent as the Retry-After header), 5xx a server error, others a generic
	// invalid_request_error.
	Status     int
	RetryAfter string
	// Message, when set, is the error's message in place of the usual
	// one: a provider that echoes what it was sent (the key, the URL).
	Message string

	// Delay answers slowly; the answer is abandoned if the client goes away.
	Delay time.Duration

	// Malformed makes the server answer 200 with a body that is not JSON.
	Malformed bool
}

// Image is a decoded image_url content part.
type Image struct {
	MediaType string
	Data      []byte
	Detail    string
	Width     int // 0 when the format cannot be decoded (e.g. webp)
	Height    int
}

// Message is one received chat message.
type Message struct {
	Role   string
	Text   string // all text parts joined with "\n"
	Images []Image
}

// Request is one received request, valid or not. Fields that could not be
// parsed are left at their zero values.
type Request struct {
	Method      string
	Path        string
	Model       string
	Messages    []Message
	MaxTokens   int
	Temperature *float64
	Images      []Image // all images of all messages, in order
	Header      http.Header
	Body        []byte
	// Status is the HTTP status the server answered with (0 while in
	// flight, or if the client went away before the answer).
	Status int
}

// Server is a fake OpenAI-compatible server backed by httptest.
type Server struct {
	srv    *httptest.Server
	key    string
	models map[string]Model
	order  []string

	mu       sync.Mutex
	queue    []Reply
	def      func(Request) Reply
	requests []*Request
	prompt   int
	complete int
}

// New starts a fake server that accepts key and serves models. It is closed
// when the test finishes.
func New(t testing.TB, key string, models ...Model) *Server {
	t.Helper()
	s := &Server{
		key:    key,
		models: make(map[string]Model, len(models)),
		def: func(Request) Reply {
			return Reply{Content: "ok", PromptTokens: 5, CompletionTokens: 1}
		},
	}
	for _, m := range models {
		if _, dup := s.models[m.ID]; !dup {
			s.order = append(s.order, m.ID)
		}
		s.models[m.ID] = m
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/chat/completions", s.handleChat)
	mux.HandleFunc("/chat/completions", s.handleChat)
	mux.HandleFunc("/v1/models", s.handleModels)
	mux.HandleFunc("/models", s.handleModels)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.record(r, nil)
		writeError(w, http.StatusNotFound, "Invalid URL ("+r.Method+" "+r.URL.Path+")", "invalid_request_error", nil)
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the base URL including /v1 (what goes into openai.ClientConfig.BaseURL).
func (s *Server) URL() string { return s.srv.URL + "/v1" }

// RootURL is the base URL without /v1.
func (s *Server) RootURL() string { return s.srv.URL }

// Enqueue queues the next answers. When the queue is empty the default
// answers.
func (s *Server) Enqueue(r ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, r...)
}

// SetDefault sets the function answering when the queue is empty. The
// default default answers "ok".
func (s *Server) SetDefault(fn func(req Request) Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = fn
}

// Requests returns copies of every request received, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		out[i] = *r
	}
	return out
}

// Usage returns the summed usage over successful answers.
func (s *Server) Usage() (prompt, completion int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prompt, s.complete
}

// record stores a copy of the incoming request and returns the stored one.
func (s *Server) record(r *http.Request, body []byte) *Request {
	req := &Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	return req
}

func (s *Server) setStatus(req *Request, status int) {
	s.mu.Lock()
	req.Status = status
	s.mu.Unlock()
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	return len(h) > len(p) && strings.EqualFold(h[:len(p)], p) && h[len(p):] == s.key
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	rec := s.record(r, nil)
	if r.Method != http.MethodGet {
		s.setStatus(rec, http.StatusMethodNotAllowed)
		writeError(w, http.StatusMethodNotAllowed, "Method not allowed", "invalid_request_error", nil)
		return
	}
	if !s.authorized(r) {
		s.setStatus(rec, http.StatusUnauthorized)
		writeError(w, http.StatusUnauthorized, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
		return
	}
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, id := range s.order {
		list.Data = append(list.Data, model{ID: id, Object: "model", Created: 1700000000, OwnedBy: "llmtest"})
	}
	s.setStatus(rec, http.StatusOK)
	writeJSON(w, http.StatusOK, list)
}

// wire types of the request body.
type wireRequest struct {
	Model               *string         `json:"model"`
	Messages            json.RawMessage `json:"messages"`
	MaxTokens           json.RawMessage `json:"max_tokens"`
	MaxCompletionTokens json.RawMessage `json:"max_completion_tokens"`
	Temperature         json.RawMessage `json:"temperature"`
	Stream              bool            `json:"stream"`
}

type wireMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// badRequest is a validation failure.
type badRequest struct {
	status  int
	message string
	code    any
}

func invalid(format string, a ...any) *badRequest {
	return &badRequest{status: http.StatusBadRequest, message: fmt.Sprintf(format, a...)}
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	body, readErr := io.ReadAll(r.Body)
	rec := s.record(r, body)
	fail := func(status int, msg, typ string, code any) {
		s.setStatus(rec, status)
		writeError(w, status, msg, typ, code)
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "Method not allowed", "invalid_request_error", nil)
		return
	}
	if !s.authorized(r) {
		fail(http.StatusUnauthorized, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
		return
	}
	if readErr != nil {
		fail(http.StatusBadRequest, "could not read request body", "invalid_request_error", nil)
		return
	}

	parsed, bad := s.parse(body)
	s.mu.Lock()
	rec.Model, rec.Messages, rec.MaxTokens, rec.Temperature, rec.Images =
		parsed.Model, parsed.Messages, parsed.MaxTokens, parsed.Temperature, parsed.Images
	s.mu.Unlock()
	if bad != nil {
		fail(bad.status, bad.message, "invalid_request_error", bad.code)
		return
	}

	s.mu.Lock()
	var reply Reply
	if len(s.queue) > 0 {
		reply = s.queue[0]
		s.queue = s.queue[1:]
		s.mu.Unlock()
	} else {
		def := s.def
		s.mu.Unlock()
		reply = def(s.snapshot(rec))
	}

	if reply.Delay > 0 {
		t := time.NewTimer(reply.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // client went away; nothing to answer
		}
	}

	message := func(usual string) string {
		if reply.Message != "" {
			return reply.Message
		}
		return usual
	}
	switch {
	case reply.Status == http.StatusTooManyRequests:
		if reply.RetryAfter != "" {
			w.Header().Set("Retry-After", reply.RetryAfter)
		}
		fail(reply.Status, message("Rate limit reached for requests. Please try again later."), "requests", "rate_limit_exceeded")
		return
	case reply.Status >= 500:
		if reply.RetryAfter != "" {
			w.Header().Set("Retry-After", reply.RetryAfter)
		}
		fail(reply.Status, message("The server had an error while processing your request. Sorry about that!"), "server_error", nil)
		return
	case reply.Status != 0 && reply.Status != http.StatusOK:
		fail(reply.Status, message(fmt.Sprintf("scripted error %d", reply.Status)), "invalid_request_error", nil)
		return
	}

	if reply.Malformed {
		s.setStatus(rec, http.StatusOK)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"id":"chatcmpl-broken","object":"chat.completion","choices":[{"message":`)
		return
	}

	pt, ct := reply.PromptTokens, reply.CompletionTokens
	if pt == 0 && ct == 0 {
		pt = estimate(len(body))
		ct = estimate(len(reply.Content))
	}
	s.mu.Lock()
	s.prompt += pt
	s.complete += ct
	rec.Status = http.StatusOK
	s.mu.Unlock()

	resp := map[string]any{
		"id":      fmt.Sprintf("chatcmpl-llmtest-%d", time.Now().UnixNano()),
		"object":  "chat.completion",
		"created": time.Now().Unix(),
		"model":   parsed.Model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": reply.Content},
			"finish_reason": "stop",
		}},
		"usage": map[string]any{
			"prompt_tokens":     pt,
			"completion_tokens": ct,
			"total_tokens":      pt + ct,
		},
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) snapshot(r *Request) Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *r
}

func estimate(n int) int {
	if n/4 < 1 {
		return 1
	}
	return n / 4
}

// parse validates a chat-completions body. It returns what it could parse
// even when validation fails.
func (s *Server) parse(body []byte) (Request, *badRequest) {
	var out Request
	var wr wireRequest
	if err := json.Unmarshal(body, &wr); err != nil {
		return out, invalid("We could not parse the JSON body of your request. (%v)", err)
	}
	if wr.Model == nil || *wr.Model == "" {
		return out, invalid("you must provide a model parameter")
	}
	out.Model = *wr.Model
	model, ok := s.models[out.Model]
	if !ok {
		return out, &badRequest{
			status:  http.StatusNotFound,
			message: fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", out.Model),
			code:    "model_not_found",
		}
	}
	if wr.Stream {
		return out, invalid("stream is not supported by the llmtest server")
	}

	// Messages are parsed fully before the image-capability check so that
	// Requests() shows what was sent.
	var msgs []wireMessage
	if len(wr.Messages) == 0 || string(wr.Messages) == "null" {
		return out, invalid("Missing required parameter: 'messages'.")
	}
	if err := json.Unmarshal(wr.Messages, &msgs); err != nil {
		return out, invalid("Invalid type for 'messages': expected an array of message objects. (%v)", err)
	}
	if len(msgs) == 0 {
		return out, invalid("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	}
	var firstErr *badRequest
	for i, wm := range msgs {
		m, bad := parseMessage(i, wm)
		out.Messages = append(out.Messages, m)
		out.Images = append(out.Images, m.Images...)
		if bad != nil && firstErr == nil {
			firstErr = bad
		}
	}

	// Scalars are parsed before reporting message errors, for Requests().
	maxTok, maxName, tokErr := parseMaxTokens(wr)
	out.MaxTokens = maxTok
	var tempErr *badRequest
	if len(wr.Temperature) > 0 && string(wr.Temperature) != "null" {
		var f float64
		if err := json.Unmarshal(wr.Temperature, &f); err != nil {
			tempErr = invalid("Invalid type for 'temperature': expected a decimal, but got %s instead.", wr.Temperature)
		} else {
			out.Temperature = &f
			if f < 0 || f > 2 {
				tempErr = invalid("Invalid 'temperature': decimal above maximum value. Expected a value <= 2 and >= 0, but got %v instead.", f)
			}
		}
	}

	if firstErr != nil {
		return out, firstErr
	}
	if len(out.Images) > 0 && !model.Images {
		return out, invalid("Invalid input: model `%s` does not support image input", model.ID)
	}
	if tokErr != nil {
		return out, tokErr
	}
	if model.MaxTokens > 0 && maxTok > model.MaxTokens {
		return out, invalid("Invalid '%s': %d is too large. This model supports at most %d completion tokens.", maxName, maxTok, model.MaxTokens)
	}
	if tempErr != nil {
		return out, tempErr
	}
	return out, nil
}

func parseMaxTokens(wr wireRequest) (int, string, *badRequest) {
	name, raw := "max_tokens", wr.MaxTokens
	if len(raw) == 0 || string(raw) == "null" {
		name, raw = "max_completion_tokens", wr.MaxCompletionTokens
	}
	if len(raw) == 0 || string(raw) == "null" {
		return 0, name, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, name, invalid("Invalid type for '%s': expected an integer, but got %s instead.", name, raw)
	}
	if n <= 0 {
		return n, name, invalid("Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", name, n)
	}
	return n, name, nil
}

func parseMessage(i int, wm wireMessage) (Message, *badRequest) {
	m := Message{Role: wm.Role}
	switch wm.Role {
	case "system", "user", "assistant":
	case "":
		return m, invalid("Missing required parameter: 'messages[%d].role'.", i)
	default:
		return m, invalid("Invalid value: '%s'. Supported values are: 'system', 'assistant', and 'user'. (messages[%d].role)", wm.Role, i)
	}
	raw := bytes.TrimSpace(wm.Content)
	if len(raw) == 0 || string(raw) == "null" {
		if wm.Role == "assistant" {
			return m, nil
		}
		return m, invalid("Missing required parameter: 'messages[%d].content'.", i)
	}
	switch raw[0] {
	case '"':
		if err := json.Unmarshal(raw, &m.Text); err != nil {
			return m, invalid("Invalid 'messages[%d].content': %v", i, err)
		}
		return m, nil
	case '[':
	default:
		return m, invalid("Invalid type for 'messages[%d].content': expected one of a string or array of objects, but got %s instead.", i, kind(raw))
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return m, invalid("Invalid 'messages[%d].content': %v", i, err)
	}
	if len(parts) == 0 {
		return m, invalid("Invalid 'messages[%d].content': empty array. Expected an array with minimum length 1.", i)
	}
	var texts []string
	var firstErr *badRequest
	for j, rp := range parts {
		var p struct {
			Type     string  `json:"type"`
			Text     *string `json:"text"`
			ImageURL *struct {
				URL    string `json:"url"`
				Detail string `json:"detail"`
			} `json:"image_url"`
		}
		where := fmt.Sprintf("messages[%d].content[%d]", i, j)
		if err := json.Unmarshal(rp, &p); err != nil {
			if firstErr == nil {
				firstErr = invalid("Invalid '%s': expected an object. (%v)", where, err)
			}
			continue
		}
		switch p.Type {
		case "text":
			if p.Text == nil {
				if firstErr == nil {
					firstErr = invalid("Missing required parameter: '%s.text'.", where)
				}
				continue
			}
			texts = append(texts, *p.Text)
		case "image_url":
			if p.ImageURL == nil || p.ImageURL.URL == "" {
				if firstErr == nil {
					firstErr = invalid("Missing required parameter: '%s.image_url.url'.", where)
				}
				continue
			}
			img, err := decodeDataURL(p.ImageURL.URL)
			if err != nil {
				if firstErr == nil {
					firstErr = invalid("Invalid '%s.image_url.url': %v", where, err)
				}
				continue
			}
			switch p.ImageURL.Detail {
			case "", "auto", "low", "high":
			default:
				if firstErr == nil {
					firstErr = invalid("Invalid value: '%s'. Supported values are: 'auto', 'low', and 'high'. (%s.image_url.detail)", p.ImageURL.Detail, where)
				}
			}
			img.Detail = p.ImageURL.Detail
			m.Images = append(m.Images, img)
		case "":
			if firstErr == nil {
				firstErr = invalid("Missing required parameter: '%s.type'.", where)
			}
		default:
			if firstErr == nil {
				firstErr = invalid("Invalid value: '%s'. Supported values are: 'text' and 'image_url'. (%s.type)", p.Type, where)
			}
		}
	}
	m.Text = strings.Join(texts, "\n")
	return m, firstErr
}

func kind(raw []byte) string {
	switch raw[0] {
	case '{':
		return "an object"
	case 't', 'f':
		return "a boolean"
	default:
		return "a number"
	}
}

var mediaTypes = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/webp": true, "image/gif": true,
}

// decodeDataURL decodes data:<media type>;base64,<payload>.
func decodeDataURL(u string) (Image, error) {
	var img Image
	rest, ok := strings.CutPrefix(u, "data:")
	if !ok {
		if strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") {
			return img, fmt.Errorf("remote image URLs are not supported by the llmtest server; send a base64 data URL")
		}
		return img, fmt.Errorf("expected a base64-encoded data URL with an image MIME type (e.g. 'data:image/png;base64,...')")
	}
	meta, payload, ok := strings.Cut(rest, ",")
	if !ok {
		return img, fmt.Errorf("malformed data URL: missing ','")
	}
	params := strings.Split(meta, ";")
	mt := strings.ToLower(strings.TrimSpace(params[0]))
	b64 := false
	for _, p := range params[1:] {
		if strings.EqualFold(strings.TrimSpace(p), "base64") {
			b64 = true
		}
	}
	if !b64 {
		return img, fmt.Errorf("data URL must be base64-encoded")
	}
	if !mediaTypes[mt] {
		return img, fmt.Errorf("unsupported image media type %q; supported: image/png, image/jpeg, image/webp, image/gif", mt)
	}
	data, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		return img, fmt.Errorf("invalid base64 image data: %v", err)
	}
	if len(data) == 0 {
		return img, fmt.Errorf("empty image data")
	}
	img.MediaType, img.Data = mt, data
	if mt == "image/webp" {
		if len(data) < 12 || string(data[:4]) != "RIFF" || string(data[8:12]) != "WEBP" {
			return img, fmt.Errorf("image data is not a valid image/webp")
		}
		return img, nil
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return img, fmt.Errorf("image data is not a valid %s: %v", mt, err)
	}
	if "image/"+format != mt {
		return img, fmt.Errorf("image data is %s but the data URL says %s", "image/"+format, mt)
	}
	img.Width, img.Height = cfg.Width, cfg.Height
	return img, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, message, typ string, code any) {
	writeJSON(w, status, map[string]any{
		"error": map[string]any{
			"message": message,
			"type":    typ,
			"param":   nil,
			"code":    code,
		},
	})
}

// HangUp starts a server that closes every connection as soon as it is
// made, without answering: a provider behind a broken proxy. It returns
// its base URL including /v1; it stops when the test finishes.
func HangUp(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("llmtest: listening: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return "http://" + ln.Addr().String() + "/v1"
}
