package dashboard

import (
	"fmt"
	"slices"

	"github.com/troupe-dev/troupe/store"
)

// dag is a job's task graph laid out for an SVG: a column per depth (a
// task sits right of everything it depends on), a row per task in its
// column.
type dag struct {
	Width, Height int
	Nodes         []dagNode
	Edges         []dagEdge
}

type dagNode struct {
	X, Y, W, H int
	Key        string
	Role       string
	Status     string
	Revision   int
}

type dagEdge struct{ Path string }

const (
	nodeW, nodeH = 168, 46
	colGap       = 56
	rowGap       = 18
	pad          = 8
)

func layoutDAG(tasks []store.Task) dag {
	byKey := map[string]store.Task{}
	for _, t := range tasks {
		byKey[t.Key] = t
	}
	depth := map[string]int{}
	var depthOf func(key string, seen map[string]bool) int
	depthOf = func(key string, seen map[string]bool) int {
		if d, ok := depth[key]; ok {
			return d
		}
		if seen[key] { // plans are validated acyclic; never loop regardless
			return 0
		}
		seen[key] = true
		d := 0
		for _, dep := range byKey[key].DependsOn {
			if _, ok := byKey[dep]; ok {
				d = max(d, depthOf(dep, seen)+1)
			}
		}
		depth[key] = d
		return d
	}
	var cols [][]store.Task
	for _, t := range tasks {
		d := depthOf(t.Key, map[string]bool{})
		for len(cols) <= d {
			cols = append(cols, nil)
		}
		cols[d] = append(cols[d], t)
	}
	g := dag{}
	at := map[string]dagNode{}
	rows := 0
	for c, col := range cols {
		rows = max(rows, len(col))
		for r, t := range col {
			n := dagNode{
				X: pad + c*(nodeW+colGap), Y: pad + r*(nodeH+rowGap), W: nodeW, H: nodeH,
				Key: t.Key, Role: t.Role, Status: t.Status, Revision: t.Revision,
			}
			g.Nodes = append(g.Nodes, n)
			at[t.Key] = n
		}
	}
	for _, t := range tasks {
		to := at[t.Key]
		deps := slices.Clone(t.DependsOn)
		slices.Sort(deps)
		for _, dep := range deps {
			from, ok := at[dep]
			if !ok {
				continue
			}
			x1, y1 := from.X+from.W, from.Y+from.H/2
			x2, y2 := to.X, to.Y+to.H/2
			mid := (x1 + x2) / 2
			g.Edges = append(g.Edges, dagEdge{Path: fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, mid, y1, mid, y2, x2-4, y2)})
		}
	}
	g.Width = pad*2 + len(cols)*nodeW + max(0, len(cols)-1)*colGap
	g.Height = pad*2 + rows*nodeH + max(0, rows-1)*rowGap
	return g
}

// barChart is finished jobs per bucket, stacked done over failed.
type barChart struct {
	Width, Height int
	Bars          []bar
	Max           int
	Total         int
}

type bar struct {
	X, W          int
	DoneY, DoneH  int
	FailY, FailH  int
	Label         string
	Done, Failed  int
	LabelX, TickY int
}

func newBarChart(buckets []store.JobBucket) barChart {
	const h, bw, gap = 120, 28, 6
	c := barChart{Height: h + 18, Width: len(buckets)*(bw+gap) + gap}
	for _, b := range buckets {
		c.Max = max(c.Max, b.Done+b.Failed+b.Cancelled)
		c.Total += b.Done + b.Failed + b.Cancelled
	}
	scale := func(n int) int {
		if c.Max == 0 {
			return 0
		}
		return n * h / c.Max
	}
	for i, b := range buckets {
		x := gap + i*(bw+gap)
		failed := b.Failed + b.Cancelled
		dh, fh := scale(b.Done), scale(failed)
		c.Bars = append(c.Bars, bar{
			X: x, W: bw, DoneH: dh, DoneY: h - dh, FailH: fh, FailY: h - dh - fh,
			Label: b.Start.Local().Format("15:04"), Done: b.Done, Failed: failed,
			LabelX: x + bw/2, TickY: h + 14,
		})
	}
	return c
}
