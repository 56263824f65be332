package llmtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testKey = "sk-test-secret-123"

func newServer(t *testing.T) *Server {
	return New(t, testKey,
		Model{ID: "qwen-plus", MaxTokens: 8192},
		Model{ID: "qwen-vl-plus", Images: true, MaxTokens: 4096},
	)
}

func client(s *Server, key string) *openai.Client {
	cfg := openai.DefaultConfig(key)
	cfg.BaseURL = s.URL()
	return openai.NewClientWithConfig(cfg)
}

func userMsg(text string) []openai.ChatCompletionMessage {
	return []openai.ChatCompletionMessage{
		{Role: openai.ChatMessageRoleSystem, Content: "You are helpful."},
		{Role: openai.ChatMessageRoleUser, Content: text},
	}
}

func pngDataURL(t *testing.T, w, h int) string {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	img.Set(0, 0, color.RGBA{R: 255, A: 255})
	var buf bytes.Buffer
	require.NoError(t, png.Encode(&buf, img))
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())
}

func imageMsg(url string) []openai.ChatCompletionMessage {
	return []openai.ChatCompletionMessage{{
		Role: openai.ChatMessageRoleUser,
		MultiContent: []openai.ChatMessagePart{
			{Type: openai.ChatMessagePartTypeText, Text: "What is in this picture?"},
			{Type: openai.ChatMessagePartTypeImageURL, ImageURL: &openai.ChatMessageImageURL{URL: url, Detail: openai.ImageURLDetailLow}},
		},
	}}
}

func apiError(t *testing.T, err error) *openai.APIError {
	t.Helper()
	require.Error(t, err)
	var apiErr *openai.APIError
	require.True(t, errors.As(err, &apiErr), "want *openai.APIError, got %T: %v", err, err)
	return apiErr
}

func TestNormalAnswer(t *testing.T) {
	s := newServer(t)
	s.Enqueue(Reply{Content: "Hello there", PromptTokens: 12, CompletionTokens: 3})
	temp := float32(0.5)
	resp, err := client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-plus", Messages: userMsg("hi"), MaxTokens: 100, Temperature: temp,
	})
	require.NoError(t, err)
	assert.Equal(t, "chat.completion", resp.Object)
	assert.Equal(t, "qwen-plus", resp.Model)
	assert.NotEmpty(t, resp.ID)
	assert.NotZero(t, resp.Created)
	require.Len(t, resp.Choices, 1)
	assert.Equal(t, openai.ChatMessageRoleAssistant, resp.Choices[0].Message.Role)
	assert.Equal(t, "Hello there", resp.Choices[0].Message.Content)
	assert.Equal(t, openai.FinishReasonStop, resp.Choices[0].FinishReason)
	assert.Equal(t, openai.Usage{PromptTokens: 12, CompletionTokens: 3, TotalTokens: 15}, resp.Usage)

	reqs := s.Requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, "qwen-plus", r.Model)
	assert.Equal(t, 100, r.MaxTokens)
	require.NotNil(t, r.Temperature)
	assert.InDelta(t, 0.5, *r.Temperature, 1e-9)
	require.Len(t, r.Messages, 2)
	assert.Equal(t, Message{Role: "system", Text: "You are helpful."}, r.Messages[0])
	assert.Equal(t, Message{Role: "user", Text: "hi"}, r.Messages[1])
	assert.Equal(t, "Bearer "+testKey, r.Header.Get("Authorization"))
	assert.Equal(t, http.StatusOK, r.Status)

	// Queue empty: the default answers "ok"; estimated usage is non-zero.
	resp, err = client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-plus", Messages: userMsg("again"),
	})
	require.NoError(t, err)
	assert.Equal(t, "ok", resp.Choices[0].Message.Content)
	assert.Positive(t, resp.Usage.TotalTokens)
}

func TestRootBaseURLAndModels(t *testing.T) {
	s := newServer(t)
	cfg := openai.DefaultConfig(testKey)
	cfg.BaseURL = s.RootURL()
	c := openai.NewClientWithConfig(cfg)
	resp, err := c.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-plus", Messages: userMsg("hi"),
	})
	require.NoError(t, err)
	assert.Equal(t, "ok", resp.Choices[0].Message.Content)

	list, err := client(s, testKey).ListModels(context.Background())
	require.NoError(t, err)
	var ids []string
	for _, m := range list.Models {
		ids = append(ids, m.ID)
	}
	assert.Equal(t, []string{"qwen-plus", "qwen-vl-plus"}, ids)

	_, err = client(s, "wrong").ListModels(context.Background())
	assert.Equal(t, http.StatusUnauthorized, apiError(t, err).HTTPStatusCode)
}

func TestWrongKey(t *testing.T) {
	s := newServer(t)
	const wrong = "sk-wrong-key-456"
	_, err := client(s, wrong).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-plus", Messages: userMsg("hi"),
	})
	e := apiError(t, err)
	assert.Equal(t, http.StatusUnauthorized, e.HTTPStatusCode)
	assert.Equal(t, "invalid_api_key", e.Code)
	assert.Equal(t, "invalid_request_error", e.Type)
	assert.Equal(t, "Incorrect API key provided", e.Message)
	assert.NotContains(t, err.Error(), wrong)
	assert.NotContains(t, err.Error(), testKey)

	// Raw body never echoes either key; missing header is also 401.
	for _, h := range []string{"Bearer " + wrong, ""} {
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/chat/completions",
			strings.NewReader(`{"model":"qwen-plus","messages":[{"role":"user","content":"hi"}]}`))
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, res.StatusCode)
		assert.NotContains(t, string(body), wrong)
		assert.NotContains(t, string(body), testKey)
		assert.JSONEq(t, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`, string(body))
	}
	assert.Len(t, s.Requests(), 3)
	p, c := s.Usage()
	assert.Zero(t, p+c)
}

func TestUnknownModel(t *testing.T) {
	s := newServer(t)
	_, err := client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "gpt-9", Messages: userMsg("hi"),
	})
	e := apiError(t, err)
	assert.Equal(t, http.StatusNotFound, e.HTTPStatusCode)
	assert.Equal(t, "model_not_found", e.Code)
	assert.Contains(t, e.Message, "gpt-9")
}

func TestImageToTextModel(t *testing.T) {
	s := newServer(t)
	_, err := client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-plus", Messages: imageMsg(pngDataURL(t, 3, 2)),
	})
	e := apiError(t, err)
	assert.Equal(t, http.StatusBadRequest, e.HTTPStatusCode)
	assert.Contains(t, e.Message, "does not support image input")
	// The request is still recorded with its decoded image.
	reqs := s.Requests()
	require.Len(t, reqs, 1)
	require.Len(t, reqs[0].Images, 1)
	assert.Equal(t, http.StatusBadRequest, reqs[0].Status)
}

func TestImageToImageModel(t *testing.T) {
	s := newServer(t)
	s.SetDefault(func(req Request) Reply {
		if len(req.Images) == 1 {
			return Reply{Content: "a red dot"}
		}
		return Reply{Content: "no image?"}
	})
	resp, err := client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-vl-plus", Messages: imageMsg(pngDataURL(t, 7, 5)),
	})
	require.NoError(t, err)
	assert.Equal(t, "a red dot", resp.Choices[0].Message.Content)

	reqs := s.Requests()
	require.Len(t, reqs, 1)
	require.Len(t, reqs[0].Images, 1)
	img := reqs[0].Images[0]
	assert.Equal(t, "image/png", img.MediaType)
	assert.Equal(t, 7, img.Width)
	assert.Equal(t, 5, img.Height)
	assert.Equal(t, "low", img.Detail)
	assert.NotEmpty(t, img.Data)
	require.Len(t, reqs[0].Messages, 1)
	assert.Equal(t, "What is in this picture?", reqs[0].Messages[0].Text)
	assert.Len(t, reqs[0].Messages[0].Images, 1)
}

func TestInvalidImages(t *testing.T) {
	s := newServer(t)
	cases := map[string]string{
		"bad base64":   "data:image/png;base64,!!!notbase64",
		"bad type":     "data:image/bmp;base64," + base64.StdEncoding.EncodeToString([]byte("BMxxxx")),
		"not data url": "https://example.com/cat.png",
		"not a png":    "data:image/png;base64," + base64.StdEncoding.EncodeToString([]byte("hello")),
	}
	for name, url := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
				Model: "qwen-vl-plus", Messages: imageMsg(url),
			})
			e := apiError(t, err)
			assert.Equal(t, http.StatusBadRequest, e.HTTPStatusCode)
			assert.Contains(t, e.Message, "image_url.url")
		})
	}
}

func TestBodyValidation(t *testing.T) {
	s := newServer(t)
	cases := map[string]struct {
		body   string
		status int
		msg    string
	}{
		"not json":       {`{"model":`, 400, "parse the JSON"},
		"no messages":    {`{"model":"qwen-plus","messages":[]}`, 400, "messages"},
		"bad role":       {`{"model":"qwen-plus","messages":[{"role":"robot","content":"x"}]}`, 400, "robot"},
		"bad content":    {`{"model":"qwen-plus","messages":[{"role":"user","content":42}]}`, 400, "content"},
		"bad part type":  {`{"model":"qwen-plus","messages":[{"role":"user","content":[{"type":"audio"}]}]}`, 400, "audio"},
		"zero max":       {`{"model":"qwen-plus","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, 400, "max_tokens"},
		"float max":      {`{"model":"qwen-plus","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}`, 400, "max_tokens"},
		"max completion": {`{"model":"qwen-plus","max_completion_tokens":9000,"messages":[{"role":"user","content":"x"}]}`, 400, "max_completion_tokens"},
		"temperature":    {`{"model":"qwen-plus","temperature":2.5,"messages":[{"role":"user","content":"x"}]}`, 400, "temperature"},
		"ok parts":       {`{"model":"qwen-plus","temperature":0,"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`, 200, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, s.URL()+"/chat/completions", strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+testKey)
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			assert.Equal(t, tc.status, res.StatusCode, string(body))
			assert.Contains(t, string(body), tc.msg)
		})
	}
	last := s.Requests()
	var found bool
	for _, r := range last {
		if len(r.Messages) == 1 && r.Messages[0].Text == "a\nb" {
			found = true
			require.NotNil(t, r.Temperature)
			assert.Zero(t, *r.Temperature)
		}
	}
	assert.True(t, found)
}

func TestMaxTokensOverLimit(t *testing.T) {
	s := newServer(t)
	_, err := client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-vl-plus", Messages: userMsg("hi"), MaxTokens: 5000,
	})
	e := apiError(t, err)
	assert.Equal(t, http.StatusBadRequest, e.HTTPStatusCode)
	assert.Contains(t, e.Message, "max_tokens")

	_, err = client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-vl-plus", Messages: userMsg("hi"), MaxTokens: 4096,
	})
	require.NoError(t, err)
}

func TestRateLimit(t *testing.T) {
	s := newServer(t)
	s.Enqueue(Reply{Status: http.StatusTooManyRequests, RetryAfter: "2"})
	_, err := client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-plus", Messages: userMsg("hi"),
	})
	e := apiError(t, err)
	assert.Equal(t, http.StatusTooManyRequests, e.HTTPStatusCode)
	assert.Equal(t, "rate_limit_exceeded", e.Code)

	// The raw response carries Retry-After.
	s.Enqueue(Reply{Status: http.StatusTooManyRequests, RetryAfter: "2"})
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/chat/completions",
		strings.NewReader(`{"model":"qwen-plus","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusTooManyRequests, res.StatusCode)
	assert.Equal(t, "2", res.Header.Get("Retry-After"))

	// Queue drained: next call succeeds.
	_, err = client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-plus", Messages: userMsg("hi"),
	})
	require.NoError(t, err)
}

func TestServerError(t *testing.T) {
	s := newServer(t)
	s.Enqueue(Reply{Status: http.StatusInternalServerError}, Reply{Status: http.StatusServiceUnavailable})
	for _, want := range []int{500, 503} {
		_, err := client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
			Model: "qwen-plus", Messages: userMsg("hi"),
		})
		e := apiError(t, err)
		assert.Equal(t, want, e.HTTPStatusCode)
		assert.Equal(t, "server_error", e.Type)
	}
	p, c := s.Usage()
	assert.Zero(t, p+c)
}

func TestSlowReplyCancelled(t *testing.T) {
	s := newServer(t)
	s.Enqueue(Reply{Content: "too late", Delay: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := client(s, testKey).CreateChatCompletion(ctx, openai.ChatCompletionRequest{
		Model: "qwen-plus", Messages: userMsg("hi"),
	})
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 2*time.Second)

	// The handler gives up promptly; no usage is counted.
	require.Eventually(t, func() bool { return len(s.Requests()) == 1 }, time.Second, 10*time.Millisecond)
	p, c := s.Usage()
	assert.Zero(t, p+c)

	// A short delay is simply waited out.
	s.Enqueue(Reply{Content: "slow", Delay: 50 * time.Millisecond})
	resp, err := client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-plus", Messages: userMsg("hi"),
	})
	require.NoError(t, err)
	assert.Equal(t, "slow", resp.Choices[0].Message.Content)
}

func TestMalformed(t *testing.T) {
	s := newServer(t)
	s.Enqueue(Reply{Malformed: true})
	_, err := client(s, testKey).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "qwen-plus", Messages: userMsg("hi"),
	})
	require.Error(t, err)
}

func TestUsageSumsConcurrent(t *testing.T) {
	s := newServer(t)
	s.SetDefault(func(Request) Reply { return Reply{Content: "x", PromptTokens: 10, CompletionTokens: 2} })
	s.Enqueue(Reply{Status: 500}) // not counted
	c := client(s, testKey)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
				Model: "qwen-plus", Messages: userMsg("hi"),
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	assert.Equal(t, 1, failed)
	p, comp := s.Usage()
	assert.Equal(t, (n-1)*10, p)
	assert.Equal(t, (n-1)*2, comp)
	assert.Len(t, s.Requests(), n)
}
