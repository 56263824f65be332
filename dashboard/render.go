package dashboard

import (
	"bytes"
	"html/template"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/alecthomas/chroma/v2"
	chromahtml "github.com/alecthomas/chroma/v2/formatters/html"
	"github.com/alecthomas/chroma/v2/lexers"
	"github.com/alecthomas/chroma/v2/styles"
	"github.com/microcosm-cc/bluemonday"
	"github.com/sergi/go-diff/diffmatchpatch"
	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/renderer"
	gmhtml "github.com/yuin/goldmark/renderer/html"
	"github.com/yuin/goldmark/util"
)

// Model output is untrusted. Markdown is rendered by goldmark (raw HTML is
// not passed through) and the result sanitised by bluemonday's policy for
// user-generated content; highlighted code keeps only spans with classes.
var (
	md = goldmark.New(
		goldmark.WithExtensions(extension.GFM),
		goldmark.WithRenderer(renderer.NewRenderer(renderer.WithNodeRenderers(
			util.Prioritized(gmhtml.NewRenderer(), 1000),
			util.Prioritized(rawHTMLAsText{}, 100),
		))),
	)
	ugc       = newUGCPolicy()
	codeOnly  = newCodePolicy()
	chromaFmt = chromahtml.New(chromahtml.WithClasses(true), chromahtml.TabWidth(4))
	chromaSty = styles.Get("github")
)

// rawHTMLAsText shows HTML written inside markdown as text: a reviewer
// sees that the output contains a <script>, rather than nothing.
type rawHTMLAsText struct{}

func (rawHTMLAsText) RegisterFuncs(r renderer.NodeRendererFuncRegisterer) {
	r.Register(ast.KindRawHTML, func(w util.BufWriter, src []byte, n ast.Node, entering bool) (ast.WalkStatus, error) {
		if entering {
			segs := n.(*ast.RawHTML).Segments
			for i := range segs.Len() {
				seg := segs.At(i)
				_, _ = w.WriteString(`<code class="raw-html">` + template.HTMLEscapeString(string(seg.Value(src))) + `</code>`)
			}
		}
		return ast.WalkSkipChildren, nil
	})
	r.Register(ast.KindHTMLBlock, func(w util.BufWriter, src []byte, n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		b := n.(*ast.HTMLBlock)
		_, _ = w.WriteString(`<pre class="raw-html"><code>`)
		lines := b.Lines()
		for i := range lines.Len() {
			l := lines.At(i)
			_, _ = w.WriteString(template.HTMLEscapeString(string(l.Value(src))))
		}
		if b.HasClosure() {
			_, _ = w.WriteString(template.HTMLEscapeString(string(b.ClosureLine.Value(src))))
		}
		_, _ = w.WriteString("</code></pre>\n")
		return ast.WalkSkipChildren, nil
	})
}

func newUGCPolicy() *bluemonday.Policy {
	p := bluemonday.UGCPolicy()
	p.RequireNoReferrerOnLinks(true)
	p.AddTargetBlankToFullyQualifiedLinks(true)
	return p
}

func newCodePolicy() *bluemonday.Policy {
	p := bluemonday.NewPolicy()
	p.AllowElements("pre", "code", "span")
	p.AllowAttrs("class").Matching(bluemonday.SpaceSeparatedTokens).OnElements("pre", "code", "span")
	return p
}

// renderMarkdown renders untrusted markdown to safe HTML.
func renderMarkdown(src string) template.HTML {
	var buf bytes.Buffer
	if err := md.Convert([]byte(src), &buf); err != nil {
		return template.HTML("<pre>" + template.HTMLEscapeString(src) + "</pre>")
	}
	return template.HTML(ugc.SanitizeBytes(buf.Bytes()))
}

// highlight renders an untrusted file as highlighted code, by the
// language its name suggests (plain text when none).
func highlight(name, code string) template.HTML {
	lexer := lexers.Match(path.Base(name))
	if lexer == nil {
		lexer = lexers.Fallback
	}
	lexer = chroma.Coalesce(lexer)
	it, err := lexer.Tokenise(nil, code)
	var buf bytes.Buffer
	if err == nil {
		err = chromaFmt.Format(&buf, chromaSty, it)
	}
	if err != nil {
		return template.HTML("<pre>" + template.HTMLEscapeString(code) + "</pre>")
	}
	return template.HTML(codeOnly.SanitizeBytes(buf.Bytes()))
}

// isMarkdown reports whether a file is shown rendered rather than as code.
func isMarkdown(name string) bool {
	ext := strings.ToLower(path.Ext(name))
	return ext == ".md" || ext == ".markdown"
}

var chromaCSS = sync.OnceValue(func() []byte {
	var buf bytes.Buffer
	_ = chromaFmt.WriteCSS(&buf, chromaSty)
	return buf.Bytes()
})

func (s *Server) chromaCSS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(chromaCSS())
}

// diffLine is one line of a line diff: "add", "del", "same", or "skip"
// for a run of unchanged lines left out.
type diffLine struct {
	Kind string
	Text string
}

// maxDiffLines bounds the lines of one diff a page shows.
const maxDiffLines = 2000

// lineDiff compares two texts line by line and keeps three lines of
// context around each change.
func lineDiff(before, after string) (lines []diffLine, changed bool) {
	dmp := diffmatchpatch.New()
	a, b, table := dmp.DiffLinesToRunes(before, after)
	diffs := dmp.DiffCharsToLines(dmp.DiffMainRunes(a, b, false), table)
	var all []diffLine
	for _, d := range diffs {
		kind := "same"
		switch d.Type {
		case diffmatchpatch.DiffInsert:
			kind, changed = "add", true
		case diffmatchpatch.DiffDelete:
			kind, changed = "del", true
		}
		for l := range strings.Lines(d.Text) {
			all = append(all, diffLine{Kind: kind, Text: strings.TrimRight(l, "\r\n")})
		}
	}
	const context = 3
	keep := make([]bool, len(all))
	for i, l := range all {
		if l.Kind == "same" {
			continue
		}
		for j := max(0, i-context); j <= min(len(all)-1, i+context); j++ {
			keep[j] = true
		}
	}
	for i := 0; i < len(all); i++ {
		if keep[i] {
			lines = append(lines, all[i])
			continue
		}
		j := i
		for j < len(all) && !keep[j] {
			j++
		}
		lines = append(lines, diffLine{Kind: "skip", Text: plural(j-i, "unchanged line")})
		i = j - 1
	}
	if len(lines) > maxDiffLines {
		lines = append(lines[:maxDiffLines], diffLine{Kind: "skip", Text: "the rest of the diff is not shown"})
	}
	return lines, changed
}
