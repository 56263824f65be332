package dashboard

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// fragment parses rendered HTML as the content of a <div>, as the pages
// place it.
func fragment(t *testing.T, s string) *html.Node {
	t.Helper()
	ctx := &html.Node{Type: html.ElementNode, Data: "div", DataAtom: atom.Div}
	nodes, err := html.ParseFragment(strings.NewReader(s), ctx)
	require.NoError(t, err)
	root := &html.Node{Type: html.ElementNode, Data: "div", DataAtom: atom.Div}
	for _, n := range nodes {
		root.AppendChild(n)
	}
	return root
}

// requireNoActiveContent asserts that rendered HTML holds nothing that
// runs, frames, or styles.
func requireNoActiveContent(t *testing.T, rendered string) {
	t.Helper()
	walk(fragment(t, rendered), func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		switch n.Data {
		case "script", "iframe", "frame", "object", "embed", "style", "base", "form", "meta", "link":
			t.Errorf("<%s> in %q", n.Data, rendered)
		}
		for _, a := range n.Attr {
			key := strings.ToLower(a.Key)
			require.False(t, strings.HasPrefix(key, "on"), "%s=%q in %q", a.Key, a.Val, rendered)
			require.NotEqual(t, "style", key, "style=%q in %q", a.Val, rendered)
			v := strings.ToLower(strings.TrimSpace(a.Val))
			for _, scheme := range []string{"javascript:", "vbscript:", "data:text/html"} {
				require.False(t, strings.HasPrefix(v, scheme), "%s=%q in %q", a.Key, a.Val, rendered)
			}
		}
	})
}

func TestRenderMarkdownIsSafe(t *testing.T) {
	t.Parallel()
	for _, src := range []string{
		`<script>window.pwned=1</script>`,
		"text <script>alert(1)</script> inline",
		`<img src=x onerror="alert(1)">`,
		`<a href="javascript:alert(1)">x</a>`,
		`[y](javascript:alert(2))`,
		`[y](JaVaScRiPt:alert(2))`,
		`[y](jav&#x61;script:alert(2))`,
		"[y](java\tscript:alert(2))",
		`[y]: javascript:alert(2)` + "\n\n[y]",
		`![i](javascript:alert(2))`,
		`<javascript:alert(2)>`,
		`[d](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)`,
		`<iframe src="https://evil.example"></iframe>`,
		`<p style="color:red">styled</p>`,
		`<div onclick="alert(6)">click</div>`,
		`<svg onload="alert(1)"><circle r="1"/></svg>`,
		`<form action="https://evil.example"><input name="csrf"></form>`,
		`<style>body{display:none}</style>`,
		"```html\n<script>alert(1)</script>\n```",
		"    <script>alert(1)</script>",
		"| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | [x](javascript:alert(1)) |",
	} {
		t.Run(src, func(t *testing.T) {
			t.Parallel()
			out := string(renderMarkdown(src))
			requireNoActiveContent(t, out)
		})
	}
}

func TestRenderMarkdownKeepsMarkdown(t *testing.T) {
	t.Parallel()
	root := fragment(t, string(renderMarkdown("# Title\n\nSome **bold**, `code` and [docs](https://example.com/docs).\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```go\nx := \"<b>\"\n```\n")))
	require.Len(t, all(root, "h1"), 1)
	require.Equal(t, "bold", text(all(root, "strong")[0]))
	require.Len(t, all(root, "table"), 1, "GFM tables")
	links := all(root, "a")
	require.Len(t, links, 1)
	require.Equal(t, "https://example.com/docs", attr(links[0], "href"))
	require.Contains(t, attr(links[0], "rel"), "noreferrer")
	require.Contains(t, attr(links[0], "rel"), "nofollow")
	require.Equal(t, "_blank", attr(links[0], "target"))
	require.Contains(t, text(root), `x := "<b>"`, "code in a fence is text")
	require.Empty(t, all(root, "b"))
}

func TestHighlight(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, code string
		tokens     bool // the lexer recognised the language
	}{
		{"main.go", "package main\n\nconst s = \"</pre><script>alert(3)</script>\"\n", true},
		{"app.js", "const s = '</pre><script>alert(3)</script>';\n// <img src=x onerror=alert(1)>\n", true},
		{"page.html", "<html><body onload=\"alert(1)\"><script>alert(1)</script></body></html>\n", true},
		{"notes.unknown-ext", "</code></pre><script>alert(1)</script>", false},
		{"Makefile", "all:\n\t@echo '<iframe src=x>'\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := string(highlight(tt.name, tt.code))
			requireNoActiveContent(t, out)
			root := fragment(t, out)
			walk(root, func(n *html.Node) {
				if n.Type == html.ElementNode && n != root {
					require.Contains(t, []string{"pre", "code", "span"}, n.Data, "only code markup")
				}
			})
			require.Equal(t, tt.code, text(root), "the code is shown whole, as text")
			pres := all(root, "pre")
			require.Len(t, pres, 1)
			require.True(t, hasClass(pres[0], "chroma"))
			if tt.tokens {
				classed := 0
				for _, s := range all(root, "span") {
					if attr(s, "class") != "" && attr(s, "class") != "line" && attr(s, "class") != "cl" {
						classed++
					}
				}
				require.Positive(t, classed, "highlighted: tokens carry classes")
			}
		})
	}
}

func TestSafeNext(t *testing.T) {
	t.Parallel()
	for next, want := range map[string]string{
		"":                     "/",
		"/":                    "/",
		"/reviews/abc":         "/reviews/abc",
		"/jobs?status=done":    "/jobs?status=done",
		"https://evil.example": "/",
		"//evil.example":       "/",
		"/\\evil.example":      "/",
		"evil.example":         "/",
		"javascript:alert(1)":  "/",
		"/./\\evil.example":    "/",
		"/\t/evil.example":     "/",
		"/\n/evil.example":     "/",
	} {
		require.Equal(t, want, safeNext(next), "safeNext(%q)", next)
	}
}

func TestLineDiff(t *testing.T) {
	t.Parallel()
	lines, changed := lineDiff("a\nb\nc\n", "a\nb\nc\n")
	require.False(t, changed)
	require.Equal(t, []diffLine{{Kind: "skip", Text: "3 unchanged lines"}}, lines)

	before := "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n"
	after := "1\n2\n3\n4\n5\nsix\n7\n8\n9\n10\n"
	lines, changed = lineDiff(before, after)
	require.True(t, changed)
	require.Equal(t, []diffLine{
		{Kind: "skip", Text: "2 unchanged lines"},
		{Kind: "same", Text: "3"}, {Kind: "same", Text: "4"}, {Kind: "same", Text: "5"},
		{Kind: "del", Text: "6"}, {Kind: "add", Text: "six"},
		{Kind: "same", Text: "7"}, {Kind: "same", Text: "8"}, {Kind: "same", Text: "9"},
		{Kind: "skip", Text: "1 unchanged line"},
	}, lines)
}
