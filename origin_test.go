package wsauth

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOriginPatternsRefused(t *testing.T) {
	// Each of these would let pages of other sites (or every site) use a
	// signed-in user's session, or could never match anything.
	for _, p := range []string{
		"*", "*://*", "https://*", "http*://*", "*.*", "?*", "[a-z]*", "*.com", "*.", "**.example.com",
		"app.*.example.com", "example.*", "https://app.example.com/", "https://app.example.com/path",
		"user@app.example.com", "ftp://app.example.com", "", " ", "app.example.com:", "app.example.com:port",
		"[a-", "[::1", "[::1]x", "app example.com", "app.example.com#x", "%2a.example.com",
	} {
		t.Run(p, func(t *testing.T) {
			_, err := parseOriginPattern(p)
			assert.Error(t, err)
			_, err = New(Options{Sessions: &fakeSessions{}, AllowedOrigins: []string{p}})
			assert.Error(t, err)
		})
	}
}

func TestOriginMatching(t *testing.T) {
	cases := []struct {
		pattern, origin string
		want            bool
	}{
		{"app.example.com", "https://app.example.com", true},
		{"app.example.com", "http://APP.Example.com", true},
		{"app.example.com", "https://app.example.com:8443", false},
		{"app.example.com:8443", "https://app.example.com:8443", true},
		{"app.example.com", "https://app.example.com.evil.example", false},
		{"app.example.com", "https://evilapp.example.com", false},
		{"https://app.example.com", "http://app.example.com", false},
		{"https://app.example.com", "https://app.example.com", true},
		{"*.example.com", "https://a.example.com", true},
		{"*.example.com", "https://a.b.example.com", true},
		{"*.example.com", "https://example.com", false},
		{"*.example.com", "https://evilexample.com", false},
		{"*.example.com", "https://example.com.evil.example", false},
		{"https://*.example.com", "http://a.example.com", false},
		{"localhost:3000", "http://localhost:3000", true},
		{"[::1]:3000", "http://[::1]:3000", true},
		{"[::1]:3000", "http://1:3000", false},
		{"127.0.0.1:3000", "http://127.0.0.1:3001", false},
	}
	for _, tc := range cases {
		t.Run(tc.pattern+" "+tc.origin, func(t *testing.T) {
			m, err := New(Options{Sessions: &fakeSessions{}, AllowedOrigins: []string{tc.pattern}})
			require.NoError(t, err)
			r := httptest.NewRequest(http.MethodGet, "http://gateway.internal/chat", nil)
			r.Header.Set("Origin", tc.origin)
			assert.Equal(t, tc.want, m.originAllowed(r))
		})
	}
}

func TestOriginSameHost(t *testing.T) {
	m, err := New(Options{Sessions: &fakeSessions{}})
	require.NoError(t, err)
	cases := []struct {
		name, origin string
		tls          bool
		want         bool
	}{
		{"no Origin", "", false, true},
		{"same host over http", "http://chat.example.com", false, true},
		{"same host, other case", "https://Chat.Example.COM", false, true},
		{"same host over https with TLS", "https://chat.example.com", true, true},
		{"plain http page against a TLS endpoint", "http://chat.example.com", true, false},
		{"same host, other port", "http://chat.example.com:8080", false, false},
		{"null", "null", false, false},
		{"not an origin", "chat.example.com", false, false},
		{"origin with a path", "http://chat.example.com/x", false, false},
		{"origin with user info", "http://evil@chat.example.com", false, false},
		{"javascript scheme", "javascript://chat.example.com", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://chat.example.com/chat", nil)
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			assert.Equal(t, tc.want, m.originAllowed(r))
		})
	}

	r := httptest.NewRequest(http.MethodGet, "http://chat.example.com/chat", nil)
	r.Header["Origin"] = []string{""}
	assert.False(t, m.originAllowed(r), "an empty Origin header is not a missing one")
}
