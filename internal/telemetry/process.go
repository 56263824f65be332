package telemetry

import (
	"cmp"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/troupe-dev/troupe/schemas"
)

// RSSMB is the process's resident set now in MiB, from /proc/self/statm;
// 0 where there is no /proc.
func RSSMB() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		return 0
	}
	return pages * float64(os.Getpagesize()) / (1 << 20)
}

// Latency buckets: from 50 µs up, each bound 2^(1/4) (about 19 %) above the
// last, to an hour; what is longer counts in the last bucket.
const (
	bucketFirst = 50 * time.Microsecond
	bucketCount = 106
)

// bucketBounds are exact and the same on every platform: each is one
// correctly rounded product scaled by a power of two (math.Pow's last bits
// vary by architecture, and bounds are matched between processes).
var bucketBounds = func() [bucketCount]float64 {
	quarter := [4]float64{1, 1.189207115002721, 1.4142135623730951, 1.681792830507429} // 2^(k/4)
	var b [bucketCount]float64
	for i := range b {
		b[i] = math.Ldexp(bucketFirst.Seconds()*quarter[i%4], i/4)
	}
	return b
}()

// Histogram counts durations in fixed buckets, each about 19 % wider than
// the last, from 50 µs to an hour. It is safe for concurrent use; its
// zero value is empty.
type Histogram struct {
	counts [bucketCount]atomic.Uint64
}

// Observe counts d.
func (h *Histogram) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	if s > bucketBounds[0] {
		i = min(bucketCount-1, int(math.Ceil(4*math.Log2(s/bucketBounds[0]))))
		// Rounding near a bound may land one off: (low, high] is exact.
		for i > 0 && s <= bucketBounds[i-1] {
			i--
		}
		for i < bucketCount-1 && s > bucketBounds[i] {
			i++
		}
	}
	h.counts[i].Add(1)
}

// Buckets returns the buckets that hold a count, in order: the first holds
// everything up to 50 µs (Low 0), the last (High about 66 minutes)
// everything above its Low, longer durations too.
func (h *Histogram) Buckets() []schemas.Bucket {
	var out []schemas.Bucket
	for i := range h.counts {
		n := h.counts[i].Load()
		if n == 0 {
			continue
		}
		b := schemas.Bucket{High: bucketBounds[i], Count: n}
		if i > 0 {
			b.Low = bucketBounds[i-1]
		}
		out = append(out, b)
	}
	return out
}

// BucketsSince returns what after counted that before had not, bucket by
// bucket (buckets are matched by their bounds), summed over every pair
// given: after[i] against before[i].
func BucketsSince(after, before [][]schemas.Bucket) []schemas.Bucket {
	type bounds struct{ low, high float64 }
	sum := map[bounds]int64{}
	for i, a := range after {
		for _, b := range a {
			sum[bounds{b.Low, b.High}] += int64(b.Count)
		}
		if i < len(before) {
			for _, b := range before[i] {
				sum[bounds{b.Low, b.High}] -= int64(b.Count)
			}
		}
	}
	var out []schemas.Bucket
	for k, n := range sum {
		if n > 0 {
			out = append(out, schemas.Bucket{Low: k.low, High: k.high, Count: uint64(n)})
		}
	}
	slices.SortFunc(out, func(a, b schemas.Bucket) int { return cmp.Compare(a.High, b.High) })
	return out
}

// Quantile estimates the q-quantile (0 < q ≤ 1) of what the buckets
// counted, in seconds, by linear interpolation inside the bucket it falls
// in: within one bucket's width (about 19 %) of the truth. 0 when empty.
func Quantile(buckets []schemas.Bucket, q float64) float64 {
	var total uint64
	for _, b := range buckets {
		total += b.Count
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	for _, b := range buckets {
		if seen+float64(b.Count) >= rank {
			return b.Low + (b.High-b.Low)*(rank-seen)/float64(b.Count)
		}
		seen += float64(b.Count)
	}
	return buckets[len(buckets)-1].High
}
