package telemetry

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestGrafanaDashboard: deploy/grafana/troupe.json is a dashboard whose
// every panel queries series this package exports, through the
// dashboard's data-source variable, and whose panels do not overlap.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../deploy/grafana/troupe.json")
	require.NoError(t, err)
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title      string            `json:"title"`
			Datasource map[string]string `json:"datasource"`
			GridPos    struct{ X, Y, W, H int }
			Targets    []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.Equal(t, "troupe", dash.UID)
	require.NotEmpty(t, dash.Panels)

	m := NewMetrics()
	m.OutboxLag(func(context.Context) (time.Time, error) { return time.Time{}, nil })
	families, err := m.reg.Gather()
	require.NoError(t, err)
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
	}
	// Vectors without a sample yet are not gathered: name them from the source.
	src, err := os.ReadFile("metrics.go")
	require.NoError(t, err)
	for _, name := range regexp.MustCompile(`Name: "(troupe_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		exported[name[1]] = true
	}

	series := regexp.MustCompile(`troupe_[a-z_]+`)
	used := map[string]bool{}
	taken := map[[2]int]string{}
	for _, p := range dash.Panels {
		require.Equal(t, "${datasource}", p.Datasource["uid"], p.Title)
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			names := series.FindAllString(tg.Expr, -1)
			require.NotEmpty(t, names, "%s: %s", p.Title, tg.Expr)
			for _, n := range names {
				base := n
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if b, ok := strings.CutSuffix(n, suffix); ok && exported[b] {
						base = b
					}
				}
				require.True(t, exported[base], "%s queries %s, which troupe does not export", p.Title, n)
				used[base] = true
			}
		}
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				require.Empty(t, taken[[2]int{x, y}], "%s overlaps %s", p.Title, taken[[2]int{x, y}])
				taken[[2]int{x, y}] = p.Title
			}
		}
	}
	for name := range exported {
		if strings.HasPrefix(name, "troupe_") {
			require.True(t, used[name], "no panel shows %s", name)
		}
	}
}
