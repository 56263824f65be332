package telemetry

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

func TestHistogramBuckets(t *testing.T) {
	var h Histogram
	h.Observe(0)
	h.Observe(50 * time.Microsecond) // the first bound: the first bucket
	h.Observe(51 * time.Microsecond) // above it: the second
	h.Observe(2 * time.Hour)         // beyond the last bound: the last
	b := h.Buckets()
	require.Len(t, b, 3)
	require.Equal(t, schemas.Bucket{Low: 0, High: 50e-6, Count: 2}, b[0])
	require.InDelta(t, 50e-6, b[1].Low, 1e-12)
	require.InDelta(t, 50e-6*1.189207, b[1].High, 1e-9)
	require.EqualValues(t, 1, b[1].Count)
	require.Greater(t, b[2].High, 3500.0)
	require.EqualValues(t, 1, b[2].Count)

	// Every duration lands in the bucket that holds it: (Low, High].
	var all Histogram
	for us := 1; us < 200_000; us = us*11/10 + 1 {
		d := time.Duration(us) * time.Microsecond
		var one Histogram
		one.Observe(d)
		all.Observe(d)
		got := one.Buckets()
		require.Len(t, got, 1)
		require.True(t, got[0].Low < d.Seconds() && d.Seconds() <= got[0].High, "%v in (%v, %v]", d, got[0].Low, got[0].High)
	}
	for i, b := range all.Buckets()[1:] {
		require.Greater(t, b.Low, all.Buckets()[i].Low, "in order")
	}
}

func TestQuantileFromBuckets(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	var ds []time.Duration
	for range 20_000 {
		// Log-normal around 0.5 ms, with a tail.
		d := time.Duration(float64(500*time.Microsecond) * math.Exp(r.NormFloat64()))
		ds = append(ds, d)
		h.Observe(d)
	}
	slices.Sort(ds)
	for _, q := range []float64{0.5, 0.9, 0.99} {
		exact := ds[int(q*float64(len(ds)))].Seconds()
		got := Quantile(h.Buckets(), q)
		require.InEpsilon(t, exact, got, 0.19, "q%v", q)
	}
	require.Zero(t, Quantile(nil, 0.5))

	// Inside a bucket the quantile is interpolated, not a bound: spread
	// evenly over one bucket, the median is its middle.
	var one Histogram
	for i := 1; i <= 1000; i++ {
		one.Observe(time.Duration(float64(time.Millisecond) * (1 + 0.1*float64(i)/1000)))
	}
	b := one.Buckets()
	require.Len(t, b, 1, "1 to 1.1 ms: one bucket, (0.95, 1.13] ms")
	exact := 1.05e-3
	require.InEpsilon(t, exact, Quantile(b, 0.5), 0.01)
}

func TestBucketsSince(t *testing.T) {
	var a, b Histogram
	for range 3 {
		a.Observe(time.Millisecond)
	}
	before := [][]schemas.Bucket{a.Buckets(), nil}
	a.Observe(time.Millisecond)
	a.Observe(time.Second)
	b.Observe(time.Millisecond) // a worker that was not there before
	got := BucketsSince([][]schemas.Bucket{a.Buckets(), b.Buckets()}, before)
	require.Len(t, got, 2)
	require.EqualValues(t, 2, got[0].Count, "one more in a, one in b")
	require.Less(t, got[0].Low, 1e-3)
	require.GreaterOrEqual(t, got[0].High, 1e-3)
	require.EqualValues(t, 1, got[1].Count)
	require.GreaterOrEqual(t, got[1].High, 1.0)
}
