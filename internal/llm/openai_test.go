package llm_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"image"
	"image/color"
	"image/png"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/imagecheck/imagechecktest"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/internal/llm/llmtest"
	"github.com/troupe-dev/troupe/schemas"
)

const key = "sk-test-0123456789abcdefghij"

const goodAnswer = "I wrote the PRD.\n=== FILE: PRD.md ===\n# PRD\n\n## Goals\nFast.\n=== END FILE ===\n"

func setup(t *testing.T, models ...llmtest.Model) *llmtest.Server {
	t.Helper()
	if len(models) == 0 {
		models = []llmtest.Model{{ID: "text-model", MaxTokens: 4096}, {ID: "vision-model", Images: true, MaxTokens: 4096}}
	}
	return llmtest.New(t, key, models...)
}

func model(srv *llmtest.Server, id string, images bool) *llm.OpenAI {
	return llm.NewOpenAI(llm.Spec{Ref: "fake/" + id, ID: id, BaseURL: srv.URL(), APIKey: key, Images: images, MaxTokens: 1000}, nil)
}

type recorder struct {
	mu    sync.Mutex
	calls []llm.Call
}

func (r *recorder) add(c llm.Call) { r.mu.Lock(); r.calls = append(r.calls, c); r.mu.Unlock() }

func request(rec *recorder) llm.Request {
	return llm.Request{Role: "pm", System: "You are the PM.", Prompt: "# Job: Limiter\nWrite the PRD.", Record: rec.add,
		Task: llm.TaskContext{JobTitle: "Limiter", Key: "prd"}}
}

func pngData(t *testing.T, w, h int) string {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	img.Set(1, 1, color.RGBA{R: 255, A: 255})
	var buf bytes.Buffer
	require.NoError(t, png.Encode(&buf, img))
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func TestGenerateSendsWhatTheAPIExpects(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	srv.Enqueue(llmtest.Reply{Content: goodAnswer, PromptTokens: 120, CompletionTokens: 30})
	rec := &recorder{}
	resp, err := model(srv, "text-model", false).Generate(context.Background(), request(rec))
	require.NoError(t, err)
	require.Equal(t, "I wrote the PRD.", resp.Content)
	require.Equal(t, []schemas.File{{Path: "PRD.md", Content: "# PRD\n\n## Goals\nFast.\n"}}, resp.Files)
	require.EqualValues(t, 120, resp.PromptTokens)
	require.EqualValues(t, 30, resp.CompletionTokens)
	require.Equal(t, "fake/text-model", resp.Model)

	reqs := srv.Requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	require.Equal(t, "text-model", r.Model)
	require.Equal(t, 1000, r.MaxTokens)
	require.Equal(t, "Bearer "+key, r.Header.Get("Authorization"))
	require.Len(t, r.Messages, 2)
	require.Equal(t, "system", r.Messages[0].Role)
	require.Equal(t, "You are the PM.", r.Messages[0].Text)
	require.Equal(t, "user", r.Messages[1].Role)
	require.Contains(t, r.Messages[1].Text, "Write the PRD.")
	require.Equal(t, []llm.Call{{Model: "fake/text-model", PromptTokens: 120, CompletionTokens: 30, Latency: rec.calls[0].Latency, Outcome: "ok"}}, rec.calls)
}

func TestImagesGoOnlyToImageModels(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	req := request(&recorder{})
	req.Task.Attachments = []schemas.Attachment{{Name: "arch.png", MediaType: "image/png", Data: pngData(t, 7, 5)}}

	_, err := model(srv, "text-model", false).Generate(context.Background(), req)
	require.ErrorIs(t, err, llm.ErrImagesUnsupported)
	require.ErrorIs(t, err, llm.ErrRejected)
	require.Contains(t, err.Error(), `configure a model with input ["text","image"]`)
	require.Empty(t, srv.Requests(), "no call is made")

	srv.Enqueue(llmtest.Reply{Content: goodAnswer})
	_, err = model(srv, "vision-model", true).Generate(context.Background(), req)
	require.NoError(t, err)
	imgs := srv.Requests()[0].Messages[1].Images
	require.Len(t, imgs, 1)
	require.Equal(t, "image/png", imgs[0].MediaType)
	require.Equal(t, 7, imgs[0].Width, "a small image is sent as it is")

	// A large image is scaled down to the longest side allowed, keeping
	// its proportions.
	req.Task.Attachments = []schemas.Attachment{{Name: "big.png", MediaType: "image/png", Data: pngData(t, 3000, 1500)}}
	srv.Enqueue(llmtest.Reply{Content: goodAnswer})
	m := llm.NewOpenAI(llm.Spec{Ref: "fake/vision-model", ID: "vision-model", BaseURL: srv.URL(), APIKey: key, Images: true, MaxImageSide: 1000}, nil)
	_, err = m.Generate(context.Background(), req)
	require.NoError(t, err)
	imgs = srv.Requests()[1].Messages[1].Images
	require.Equal(t, 1000, imgs[0].Width)
	require.Equal(t, 500, imgs[0].Height)
}

func TestFailuresAreClassified(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		reply    llmtest.Reply
		retry    bool
		after    time.Duration
		rejected bool
		limited  bool
	}{
		{"rate limited", llmtest.Reply{Status: 429, RetryAfter: "2"}, true, 2 * time.Second, false, true},
		{"server error", llmtest.Reply{Status: 500}, true, 0, false, false},
		{"unavailable", llmtest.Reply{Status: 503, RetryAfter: "2"}, true, 0, false, false},
		{"malformed", llmtest.Reply{Malformed: true}, true, 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := setup(t)
			srv.Enqueue(tt.reply)
			rec := &recorder{}
			_, err := model(srv, "text-model", false).Generate(context.Background(), request(rec))
			require.Error(t, err)
			var retry *llm.RetryError
			require.Equal(t, tt.retry, errors.As(err, &retry), err.Error())
			if tt.retry {
				require.Equal(t, tt.after, retry.RetryAfter)
			}
			require.Equal(t, tt.limited, errors.Is(err, llm.ErrRateLimited), "only a 429 is a rate limit")
			require.NotContains(t, err.Error(), key)
			require.Len(t, rec.calls, 1)
			require.Equal(t, "retry", rec.calls[0].Outcome)
		})
	}

	t.Run("wrong key is rejected, and the key never shows", func(t *testing.T) {
		t.Parallel()
		srv := setup(t)
		m := llm.NewOpenAI(llm.Spec{Ref: "fake/text-model", ID: "text-model", BaseURL: srv.URL(), APIKey: "sk-wrong-wrong-wrong-wrong"}, nil)
		_, err := m.Generate(context.Background(), request(&recorder{}))
		require.ErrorIs(t, err, llm.ErrRejected)
		require.NotContains(t, err.Error(), "sk-wrong")
	})

	t.Run("slow answer times out with the caller's context", func(t *testing.T) {
		t.Parallel()
		srv := setup(t)
		srv.Enqueue(llmtest.Reply{Content: goodAnswer, Delay: 10 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := model(srv, "text-model", false).Generate(ctx, request(&recorder{}))
		var retry *llm.RetryError
		require.ErrorAs(t, err, &retry)
	})
}

func TestMalformedAnswerGetsOneRepair(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	srv.Enqueue(llmtest.Reply{Content: "Here is my PRD: Goals are speed.", PromptTokens: 10, CompletionTokens: 5},
		llmtest.Reply{Content: goodAnswer, PromptTokens: 20, CompletionTokens: 8})
	rec := &recorder{}
	resp, err := model(srv, "text-model", false).Generate(context.Background(), request(rec))
	require.NoError(t, err)
	require.Len(t, resp.Files, 1)
	require.EqualValues(t, 30, resp.PromptTokens, "both calls count")
	require.Len(t, rec.calls, 2)
	repair := srv.Requests()[1]
	require.Len(t, repair.Messages, 4)
	require.Equal(t, "assistant", repair.Messages[2].Role)
	require.Contains(t, repair.Messages[3].Text, "could not be read")

	// Two bad answers: the output carries the parse error for review.
	srv.Enqueue(llmtest.Reply{Content: "no files"}, llmtest.Reply{Content: "still none"})
	resp, err = model(srv, "text-model", false).Generate(context.Background(), request(&recorder{}))
	require.NoError(t, err)
	require.Empty(t, resp.Files)
	require.Contains(t, resp.ParseError, "holds no file")
	require.Contains(t, resp.Content, "still none")
}

func TestFallbacksInOrder(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	srv.SetDefault(func(r llmtest.Request) llmtest.Reply {
		if r.Model == "text-model" {
			return llmtest.Reply{Status: 429, RetryAfter: "30"}
		}
		return llmtest.Reply{Content: goodAnswer}
	})
	rec := &recorder{}
	f := &llm.Fallbacks{Models: []llm.Model{model(srv, "text-model", false), model(srv, "vision-model", true)}}
	resp, err := f.Generate(context.Background(), request(rec))
	require.NoError(t, err)
	require.Equal(t, "fake/vision-model", resp.Model)
	require.Len(t, rec.calls, 2)
	require.Equal(t, "retry", rec.calls[0].Outcome)
	require.Equal(t, "ok", rec.calls[1].Outcome)
}

func TestProviderLimitIsShared(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	var mu sync.Mutex
	inFlight, peak := 0, 0
	srv.SetDefault(func(llmtest.Request) llmtest.Reply {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return llmtest.Reply{Content: goodAnswer}
	})
	limiter := make(chan struct{}, 2)
	a := llm.NewOpenAI(llm.Spec{Ref: "fake/text-model", ID: "text-model", BaseURL: srv.URL(), APIKey: key}, limiter)
	b := llm.NewOpenAI(llm.Spec{Ref: "fake/vision-model", ID: "vision-model", BaseURL: srv.URL(), APIKey: key, Images: true}, limiter)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := a
			if i%2 == 1 {
				m = b
			}
			_, err := m.Generate(context.Background(), request(&recorder{}))
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Equal(t, 2, peak, "two models of one provider share its limit")
}

// TestImageBoundIsConfigured: a small file that claims a canvas larger
// than models.maxImageBytes is refused before it is decoded.
func TestImageBoundIsConfigured(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	req := request(&recorder{})
	req.Task.Attachments = []schemas.Attachment{{Name: "bomb.png", MediaType: "image/png",
		Data: base64.StdEncoding.EncodeToString(imagechecktest.ZeroPNG(8000, 8000, 8, imagechecktest.Gray))}}
	m := llm.NewOpenAI(llm.Spec{Ref: "fake/vision-model", ID: "vision-model", BaseURL: srv.URL(), APIKey: key, Images: true, MaxImageBytes: 32 << 20}, nil)
	_, err := m.Generate(context.Background(), req)
	require.ErrorIs(t, err, llm.ErrRejected)
	require.ErrorContains(t, err, "8000x8000 pixels of 8-bit grey, 64 MB decoded; at most 32 MiB may be")
	require.Empty(t, srv.Requests())
}

// TestFallbackRetryBeatsRefusal: when the primary refuses and the
// fallback is rate limited, the task is retried, not failed.
func TestFallbackRetryBeatsRefusal(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	srv.Enqueue(llmtest.Reply{Status: 429, RetryAfter: "7"})
	req := request(&recorder{})
	req.Task.Attachments = []schemas.Attachment{{Name: "a.png", MediaType: "image/png", Data: pngData(t, 4, 4)}}
	f := &llm.Fallbacks{Models: []llm.Model{model(srv, "text-model", false), model(srv, "vision-model", true)}}
	_, err := f.Generate(context.Background(), req)
	var retry *llm.RetryError
	require.ErrorAs(t, err, &retry)
	require.Equal(t, 7*time.Second, retry.RetryAfter)
}

// TestBeforeStopsEveryCall: the budget hook runs before each call, the
// repair included.
func TestBeforeStopsEveryCall(t *testing.T) {
	t.Parallel()
	srv := setup(t)
	srv.Enqueue(llmtest.Reply{Content: "prose, no files"})
	spent := errors.New("budget spent")
	calls := 0
	req := request(&recorder{})
	req.Before = func(context.Context) error {
		calls++
		if calls > 1 {
			return spent
		}
		return nil
	}
	_, err := model(srv, "text-model", false).Generate(context.Background(), req)
	require.ErrorIs(t, err, spent)
	require.Len(t, srv.Requests(), 1, "the repair was not sent")
}

// TestProviderErrorsHideSecrets: what a provider echoes of the key (lower-
// cased, base64-encoded, inside a Basic authorization) and the credentials
// of the base URL, which net/http puts in its errors, are masked in the
// error and in the call's record.
func TestProviderErrorsHideSecrets(t *testing.T) {
	t.Parallel()
	t.Run("the key echoed", func(t *testing.T) {
		t.Parallel()
		srv := setup(t)
		forms := []string{
			strings.ToLower(key), strings.ToUpper(key),
			base64.StdEncoding.EncodeToString([]byte(key)), base64.RawURLEncoding.EncodeToString([]byte(key)),
			base64.StdEncoding.EncodeToString([]byte("user:" + key)),
		}
		srv.Enqueue(llmtest.Reply{Status: 401, Message: "Incorrect API key provided: " + strings.Join(forms, ", ")})
		rec := &recorder{}
		_, err := model(srv, "text-model", false).Generate(context.Background(), request(rec))
		require.ErrorIs(t, err, llm.ErrRejected)
		require.Contains(t, err.Error(), "Incorrect API key provided: ***")
		require.Len(t, rec.calls, 1)
		for _, f := range forms {
			require.NotContains(t, err.Error(), f)
			require.NotContains(t, rec.calls[0].Err, f)
		}
		require.NotContains(t, err.Error(), base64.StdEncoding.EncodeToString([]byte(key))[:12], "nor a part")
	})
	t.Run("a key in the base URL", func(t *testing.T) {
		t.Parallel()
		m := llm.NewOpenAI(llm.Spec{Ref: "fake/text-model", ID: "text-model", BaseURL: llmtest.HangUp(t) + "?key=SECRETVALUE123", APIKey: key}, nil)
		rec := &recorder{}
		_, err := m.Generate(context.Background(), request(rec))
		var retry *llm.RetryError
		require.ErrorAs(t, err, &retry, "a connection that broke is worth retrying")
		require.Contains(t, err.Error(), "?key=***")
		require.NotContains(t, err.Error(), "SECRETVALUE123")
		require.NotContains(t, rec.calls[0].Err, "SECRETVALUE123")
	})
}
