package llm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/troupe-dev/troupe/internal/imagecheck"
	"github.com/troupe-dev/troupe/internal/redact"
	"github.com/troupe-dev/troupe/schemas"
)

// ErrRejected marks a model call the provider refused for a reason no retry
// fixes (a bad key, an unknown model, a request it cannot take): the
// message is dead-lettered with the reason, to replay once it is fixed.
var ErrRejected = errors.New("model call rejected")

// ErrImagesUnsupported is returned before any call when a task has images
// and its model takes text only.
var ErrImagesUnsupported = errors.New("the model takes text only")

// Spec describes one configured model of an OpenAI-compatible provider.
type Spec struct {
	Ref           string // "<provider>/<model id>", its name in configuration
	ID            string // the model id sent to the provider
	BaseURL       string
	APIKey        string
	Images        bool // input has "image"
	ContextWindow int  // tokens; 0 if unknown
	MaxTokens     int  // the answer's limit; 0 for the provider's default
	Temperature   *float64
	// MaxImageSide is the longest side an image is sent with; larger ones
	// are scaled down. Defaults to DefaultMaxImageSide; negative sends
	// images as they are.
	MaxImageSide int
	// MaxImageBytes bounds the decoded pixels of one image; a larger one
	// fails the call before it is decoded. Defaults to
	// imagecheck.DefaultMaxBytes.
	MaxImageBytes int64
	// ImageDecodes bounds the images decoded at once; share one across
	// every model of a process. Defaults to one gate of
	// imagecheck.DefaultDecodes shared by every model that names none.
	ImageDecodes *imagecheck.Gate
}

// OpenAI calls a chat-completions endpoint: OpenAI, DashScope/Qwen, Kimi,
// Ollama, vLLM and others that speak the protocol.
type OpenAI struct {
	spec    Spec
	redact  *redact.Redactor // the key and the base URL's credentials
	client  *openai.Client
	limiter chan struct{} // shared by every model of the provider
	timeout time.Duration
}

// NewOpenAI returns a model. limiter bounds the calls in flight to the
// provider across every role of the process; nil for no bound.
func NewOpenAI(spec Spec, limiter chan struct{}) *OpenAI {
	cfg := openai.DefaultConfig(spec.APIKey)
	cfg.BaseURL = strings.TrimRight(spec.BaseURL, "/")
	cfg.HTTPClient = retryAfterDoer{&http.Client{}}
	// The key and what the base URL carries (?key=..., user:pass@) are
	// masked in this model's errors and, from now on, in everything the
	// process writes: an error is text in many places before it is logged.
	secrets := append([]string{spec.APIKey}, redact.ShapedValues(spec.BaseURL)...)
	redact.Add(secrets...)
	return &OpenAI{spec: spec, redact: redact.New(secrets...), client: openai.NewClientWithConfig(cfg), limiter: limiter, timeout: 10 * time.Minute}
}

// Name is the model's reference.
func (m *OpenAI) Name() string { return m.spec.Ref }

// Spec is what the model was configured with.
func (m *OpenAI) Spec() Spec { return m.spec }

// Generate asks the model for the task's files. An answer that is not in
// the file format gets one repair request; if that fails too, the answer is
// returned without files and with ParseError set, for review to reject.
func (m *OpenAI) Generate(ctx context.Context, req Request) (Response, error) {
	images := imageAttachments(req.Task)
	if len(images) > 0 && !m.spec.Images {
		return Response{}, fmt.Errorf("%w: %s cannot read the task's %d image attachment(s) (its input is [\"text\"]); configure a model with input [\"text\",\"image\"] for this role: %w",
			ErrRejected, m.spec.Ref, len(images), ErrImagesUnsupported)
	}
	user := openai.ChatCompletionMessage{Role: openai.ChatMessageRoleUser, Content: req.Prompt}
	if len(images) > 0 {
		user.Content = ""
		user.MultiContent = []openai.ChatMessagePart{{Type: openai.ChatMessagePartTypeText, Text: req.Prompt}}
		side := m.spec.MaxImageSide
		if side == 0 {
			side = DefaultMaxImageSide
		}
		gate := m.spec.ImageDecodes
		if gate == nil {
			gate = defaultDecodes
		}
		for _, a := range images {
			a, err := fitImage(ctx, a, side, m.spec.MaxImageBytes, gate)
			if ctx.Err() != nil {
				return Response{}, ctx.Err()
			}
			if err != nil {
				return Response{}, fmt.Errorf("%w: %w", ErrRejected, err)
			}
			user.MultiContent = append(user.MultiContent, openai.ChatMessagePart{
				Type:     openai.ChatMessagePartTypeImageURL,
				ImageURL: &openai.ChatMessageImageURL{URL: "data:" + a.MediaType + ";base64," + a.Data},
			})
		}
	}
	msgs := []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleSystem, Content: req.System}, user}
	start := time.Now()
	answer, usage, err := m.complete(ctx, req, msgs)
	var perr error
	if errors.Is(err, errTruncated) {
		err, perr = nil, errTruncated
	}
	if err != nil {
		return Response{}, err
	}
	resp := Response{Model: m.spec.Ref, PromptTokens: int64(usage.PromptTokens), CompletionTokens: int64(usage.CompletionTokens)}
	var summary string
	var files []schemas.File
	if perr == nil {
		summary, files, perr = ParseFiles(answer)
	}
	if perr != nil {
		// One repair request: show the model its answer and what is wrong.
		msgs = append(msgs,
			openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, Content: answer},
			openai.ChatCompletionMessage{Role: openai.ChatMessageRoleUser, Content: "Your answer could not be read: " + perr.Error() +
				". Answer again with the same content, every file as a block from a line \"=== FILE: <relative/path> ===\" to a line \"=== END FILE ===\"."})
		again, u2, err := m.complete(ctx, req, msgs)
		if errors.Is(err, errTruncated) {
			err, perr = nil, errTruncated
		} else if err == nil {
			summary, files, perr = ParseFiles(again)
		}
		if err != nil {
			return Response{}, err
		}
		resp.PromptTokens += int64(u2.PromptTokens)
		resp.CompletionTokens += int64(u2.CompletionTokens)
		answer = again
	}
	resp.Latency = time.Since(start)
	if perr != nil {
		resp.Content = "The model's answer could not be read as files, even after a repair request: " + perr.Error() + "\n\n" + answer
		resp.ParseError = perr.Error()
		return resp, nil
	}
	resp.Content, resp.Files = summary, files
	return resp, nil
}

// complete makes one call and records it.
// Complete asks the model one plain question (a system and a user
// message) and returns its answer as text, recording the call.
func (m *OpenAI) Complete(ctx context.Context, system, user string, record func(Call)) (string, error) {
	answer, _, err := m.complete(ctx, Request{Record: record}, []openai.ChatCompletionMessage{
		{Role: openai.ChatMessageRoleSystem, Content: system},
		{Role: openai.ChatMessageRoleUser, Content: user},
	})
	return answer, err
}

func (m *OpenAI) complete(ctx context.Context, req Request, msgs []openai.ChatCompletionMessage) (string, openai.Usage, error) {
	if req.Before != nil {
		if err := req.Before(ctx); err != nil {
			return "", openai.Usage{}, err
		}
	}
	start := time.Now()
	answer, usage, err := m.call(ctx, msgs)
	truncated := errors.Is(err, errTruncated)
	if truncated {
		err = nil
	}
	c := Call{Model: m.spec.Ref, PromptTokens: int64(usage.PromptTokens), CompletionTokens: int64(usage.CompletionTokens), Latency: time.Since(start), Outcome: "ok"}
	var retry *RetryError
	switch {
	case err == nil:
	case errors.As(err, &retry):
		c.Outcome, c.Err = "retry", err.Error()
	case errors.Is(err, ErrRejected):
		c.Outcome, c.Err = "rejected", err.Error()
	default:
		c.Outcome, c.Err = "error", err.Error()
	}
	req.record(c)
	if truncated {
		return answer, usage, errTruncated
	}
	return answer, usage, err
}

// errTruncated is an answer cut off at maxTokens: never taken as complete.
var errTruncated = errors.New("the answer was cut off at the model's maxTokens; answer more briefly, or split the work")

func (m *OpenAI) call(ctx context.Context, msgs []openai.ChatCompletionMessage) (string, openai.Usage, error) {
	if m.limiter != nil {
		select {
		case m.limiter <- struct{}{}:
			defer func() { <-m.limiter }()
		case <-ctx.Done():
			return "", openai.Usage{}, ctx.Err()
		}
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	holder := &retryAfter{}
	ctx = context.WithValue(ctx, retryAfterKey{}, holder)
	creq := openai.ChatCompletionRequest{Model: m.spec.ID, Messages: msgs, MaxTokens: m.spec.MaxTokens}
	if m.spec.Temperature != nil {
		creq.Temperature = float32(*m.spec.Temperature)
		if creq.Temperature == 0 {
			// go-openai leaves a zero out of the request (omitempty), and
			// the provider's default is not 0: ask for the next best thing.
			creq.Temperature = math.SmallestNonzeroFloat32
		}
	}
	out, err := m.client.CreateChatCompletion(ctx, creq)
	if err != nil {
		return "", openai.Usage{}, m.classify(err, holder.d)
	}
	if len(out.Choices) == 0 {
		return "", out.Usage, &RetryError{Err: fmt.Errorf("%s answered with no choice", m.spec.Ref)}
	}
	if out.Choices[0].FinishReason == openai.FinishReasonLength {
		return out.Choices[0].Message.Content, out.Usage, errTruncated
	}
	return out.Choices[0].Message.Content, out.Usage, nil
}

// classify sorts a failed call: rate limits, server errors, timeouts and
// broken connections are worth retrying (after the Retry-After the
// provider gave); a refusal is not. No secret appears in the error: not
// the API key in any form a provider may echo it in, nor a credential of
// the base URL, which net/http puts in its errors.
func (m *OpenAI) classify(err error, after time.Duration) error {
	clean := fmt.Errorf("%s: %s", m.spec.Ref, m.redact.String(err.Error()))
	status := 0
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	switch {
	case errors.As(err, &apiErr):
		status = apiErr.HTTPStatusCode
	case errors.As(err, &reqErr):
		status = reqErr.HTTPStatusCode
	}
	var netErr net.Error
	switch {
	case status == http.StatusTooManyRequests:
		return &RetryError{Err: clean, RetryAfter: after, RateLimited: true}
	case status == http.StatusRequestTimeout || status >= 500:
		return &RetryError{Err: clean, RetryAfter: after}
	case status >= 400:
		return fmt.Errorf("%w: %w", ErrRejected, clean)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr):
		return &RetryError{Err: clean}
	default:
		// A malformed body and other surprises: try again.
		return &RetryError{Err: clean}
	}
}

func imageAttachments(tc TaskContext) []Attachment {
	var out []Attachment
	for _, a := range tc.Attachments {
		if strings.HasPrefix(a.MediaType, "image/") {
			out = append(out, a)
		}
	}
	return out
}

// retryAfterDoer records a response's Retry-After where the caller can
// read it: the OpenAI client does not pass headers on in its errors.
type retryAfterDoer struct{ c *http.Client }

type retryAfterKey struct{}

type retryAfter struct{ d time.Duration }

func (r retryAfterDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := r.c.Do(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		if h, ok := req.Context().Value(retryAfterKey{}).(*retryAfter); ok {
			h.d = parseRetryAfter(resp.Header.Get("Retry-After"))
		}
	}
	return resp, err
}

// parseRetryAfter reads seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
