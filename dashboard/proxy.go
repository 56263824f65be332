package dashboard

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ParseTrustedProxies reads a comma-separated list of IP addresses and
// CIDR prefixes (TROUPE_DASHBOARD_TRUSTED_PROXIES): the reverse proxies
// whose X-Forwarded-For and X-Forwarded-Proto the dashboard believes.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			out = append(out, p.Masked())
			continue
		}
		ip, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an IP address nor a CIDR prefix", item)
		}
		ip = ip.Unmap()
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}

func (a *auth) trusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range a.proxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// remoteAddr is the address of the peer that sent r.
func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, _ := netip.ParseAddr(host)
	return ip.Unmap()
}

// clientAddr is the address a request comes from: its peer's, or, when
// the peer is a trusted proxy, the nearest address in X-Forwarded-For that
// is not a trusted proxy (the ones before it are the client's to write).
func (a *auth) clientAddr(r *http.Request) netip.Addr {
	ip := remoteAddr(r)
	if !a.trusted(ip) {
		return ip
	}
	hops := forwardedValues(r.Header, "X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(hops[i])
		if err != nil {
			break
		}
		ip = hop.Unmap()
		if !a.trusted(ip) {
			break
		}
	}
	return ip
}

// overTLS reports whether the browser reached us over TLS: directly, or
// through a trusted proxy that says so in X-Forwarded-Proto.
func (a *auth) overTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if !a.trusted(remoteAddr(r)) {
		return false
	}
	protos := forwardedValues(r.Header, "X-Forwarded-Proto")
	// The last is what the nearest proxy saw.
	return len(protos) > 0 && strings.EqualFold(protos[len(protos)-1], "https")
}

// forwardedValues are a list header's values, over all its lines.
func forwardedValues(h http.Header, name string) []string {
	var out []string
	for _, line := range h.Values(name) {
		for v := range strings.SplitSeq(line, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}
