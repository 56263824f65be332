package dashboard

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed sign-ins are limited by a token bucket per client address and per
// user: failureBurst failures at once, then one every failureEvery. Only a
// failure spends a token; but with none left, every attempt is refused
// before its secret is checked, so guessing stops right or wrong.
const (
	failureBurst = 10
	failureEvery = 6 * time.Second
	// maxFailureKeys bounds the buckets kept; full (idle) ones go first.
	maxFailureKeys = 10_000
)

// failures counts failed sign-ins by key ("ip:…", "user:…").
type failures struct {
	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newFailures() *failures { return &failures{buckets: map[string]*rate.Limiter{}} }

// wait reports how long the first of keys that has no failure left to
// spend must wait; 0 when every key may try now.
func (f *failures) wait(now time.Time, keys ...string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var longest time.Duration
	for _, k := range keys {
		b, ok := f.buckets[k]
		if !ok {
			continue
		}
		if tokens := b.TokensAt(now); tokens < 1 {
			d := time.Duration((1 - tokens) * float64(failureEvery))
			longest = max(longest, d)
		}
	}
	return longest
}

// fail spends one failure of each key.
func (f *failures) fail(now time.Time, keys ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		b, ok := f.buckets[k]
		if !ok {
			if len(f.buckets) >= maxFailureKeys {
				f.prune(now)
			}
			b = rate.NewLimiter(rate.Every(failureEvery), failureBurst)
			f.buckets[k] = b
		}
		b.AllowN(now, 1)
	}
}

// prune forgets the buckets that are full again: they remember nothing.
func (f *failures) prune(now time.Time) {
	for k, b := range f.buckets {
		if b.TokensAt(now) >= failureBurst {
			delete(f.buckets, k)
		}
	}
}

// addrKey is the bucket of a client address: IPv6 clients by their /64,
// which one host commonly holds whole.
func addrKey(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return "ip:" + p.String()
	}
	return "ip:" + ip.String()
}

// revocations are the signed-in sessions signed out, by nonce, until
// they would have expired anyway.
type revocations struct {
	mu  sync.Mutex
	ids map[string]int64 // nonce → expiry (Unix seconds)
}

func newRevocations() *revocations { return &revocations{ids: map[string]int64{}} }

func (r *revocations) add(nonce string, expires int64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, exp := range r.ids {
		if exp < now.Unix() {
			delete(r.ids, id)
		}
	}
	r.ids[nonce] = expires
}

func (r *revocations) has(nonce string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.ids[nonce]
	return ok
}

// list returns the revocations in force.
func (r *revocations) list(now time.Time) []revocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]revocation, 0, len(r.ids))
	for id, exp := range r.ids {
		if exp >= now.Unix() {
			out = append(out, revocation{Nonce: id, Expires: exp})
		}
	}
	return out
}
