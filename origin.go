package wsauth

import (
	"fmt"
	"net/http"
	"strings"
)

// originPattern is one entry of Options.AllowedOrigins, parsed once in New.
type originPattern struct {
	scheme   string // "http" or "https"; empty: either
	host     string // lower case host[:port]; for a wildcard, the domain after "*."
	wildcard bool   // "*.example.com": any subdomain of host, not host itself
}

// parseOriginPattern parses an allowed-origin pattern: a host with an
// optional port ("app.example.com", "localhost:3000", "[::1]:3000"), an
// optional "http://" or "https://" in front, and at most a leading "*."
// that stands for any subdomain of a domain with at least two labels
// ("*.example.com"). Anything else (other wildcards, paths, user info,
// "*" alone) is refused, so that no pattern can quietly allow every site.
func parseOriginPattern(s string) (originPattern, error) {
	var p originPattern
	rest := strings.ToLower(strings.TrimSpace(s))
	if scheme, host, ok := strings.Cut(rest, "://"); ok {
		if scheme != "http" && scheme != "https" {
			return p, fmt.Errorf("wsauth: origin pattern %q: scheme must be http or https", s)
		}
		p.scheme, rest = scheme, host
	}
	if strings.HasPrefix(rest, "*.") {
		p.wildcard, rest = true, rest[2:]
		if domain, _, _ := strings.Cut(rest, ":"); !strings.Contains(domain, ".") {
			return p, fmt.Errorf("wsauth: origin pattern %q: a wildcard needs a domain of two labels or more after \"*.\"", s)
		}
	}
	if rest == "" {
		return p, fmt.Errorf("wsauth: origin pattern %q: no host", s)
	}
	if !validHostPort(rest) {
		return p, fmt.Errorf("wsauth: origin pattern %q: want a host, optionally with a scheme, a port and a leading \"*.\"", s)
	}
	p.host = rest
	return p, nil
}

// match reports whether an origin's scheme and host match the pattern.
func (p originPattern) match(scheme, host string) bool {
	if p.scheme != "" && !strings.EqualFold(p.scheme, scheme) {
		return false
	}
	if !p.wildcard {
		return strings.EqualFold(host, p.host)
	}
	n := len(host) - len(p.host)
	return n > 1 && host[n-1] == '.' && strings.EqualFold(host[n:], p.host)
}

// originAllowed applies the Origin rule of the session path: no Origin
// header (a non-browser client), the request's own host, or an allowed
// pattern. More than one Origin header, an empty one, "null" and anything
// that is not a serialized http(s) origin are refused. When the request
// arrived over TLS, a page served over plain http on the same host is not
// the same origin.
func (m *Middleware) originAllowed(r *http.Request) bool {
	vals := r.Header["Origin"]
	switch len(vals) {
	case 0:
		return true
	case 1:
	default:
		return false
	}
	scheme, host, ok := splitOrigin(vals[0])
	if !ok {
		return false
	}
	if (host == r.Host || strings.EqualFold(host, r.Host)) && (r.TLS == nil || strings.EqualFold(scheme, "https")) {
		return true
	}
	for _, p := range m.origins {
		if p.match(scheme, host) {
			return true
		}
	}
	return false
}

// splitOrigin splits a serialized origin "scheme://host[:port]" and
// reports whether it is one.
func splitOrigin(origin string) (scheme, host string, ok bool) {
	scheme, host, ok = strings.Cut(origin, "://")
	if !ok || host == "" || !(strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https")) {
		return "", "", false
	}
	for i := 0; i < len(host); i++ {
		switch host[i] {
		case '/', '?', '#', '@', ' ', '\t', '\\', '*':
			return "", "", false
		}
	}
	return scheme, host, true
}

// validHostPort reports whether s is a host name or IP address with an
// optional port: letters, digits, '.', '-' and '_', or an IPv6 literal in
// brackets, then optionally ':' and digits.
func validHostPort(s string) bool {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 2 {
			return false
		}
		for _, c := range s[1:end] {
			if !(c == ':' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
		host, port = "", s[end+1:]
		if port != "" && port[0] != ':' {
			return false
		}
		port = strings.TrimPrefix(port, ":")
		if port == "" && strings.HasSuffix(s, ":") {
			return false
		}
	} else {
		var hasPort bool
		host, port, hasPort = strings.Cut(s, ":")
		if hasPort && port == "" {
			return false
		}
		if host == "" {
			return false
		}
		for _, c := range host {
			if !(c == '.' || c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
				return false
			}
		}
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(port) <= 5
}
