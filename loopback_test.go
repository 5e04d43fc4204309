package wsauth

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoopbackIsOffByDefault(t *testing.T) {
	h := newHarness(t, Options{})
	got, resp := h.dial(t, "", nil)
	require.Nil(t, got)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// TestLoopback runs real handshakes from 127.0.0.1 with the option on.
func TestLoopback(t *testing.T) {
	h := newHarness(t, Options{InsecureTrustLoopback: true})
	cases := []struct {
		name   string
		header http.Header
		status int    // 0: the socket opens
		as     string // the plugin name it opens as
	}{
		{"bare local client", nil, 0, LoopbackPluginName},
		{"local plugin with its key", hdr(PluginTokenHeader, testKey), 0, "telegram"},
		{"local client with a wrong key: the key is final", hdr(PluginTokenHeader, "wrong"), 401, ""},
		{"browser page (Origin) on this host", hdr("Origin", "https://evil.example"), 403, ""},
		{"browser page of the gateway itself", nil, 401, ""}, // Origin set below
		{"cookie: the session path decides", hdr("Cookie", testCookie+"=forged"), 401, ""},
		{"X-Forwarded-For", hdr("X-Forwarded-For", "203.0.113.7"), 401, ""},
		{"X-Forwarded-For naming loopback", hdr("X-Forwarded-For", "127.0.0.1"), 401, ""},
		{"Forwarded", hdr("Forwarded", "for=203.0.113.7"), 401, ""},
		{"X-Real-IP", hdr("X-Real-IP", "203.0.113.7"), 401, ""},
		{"Via", hdr("Via", "1.1 proxy"), 401, ""},
		{"X-Forwarded-Host", hdr("X-Forwarded-Host", "gw.example"), 401, ""},
		{"empty X-Forwarded-For", hdr("X-Forwarded-For", ""), 401, ""},
		{"Authorization: the session path decides", hdr("Authorization", "Bearer forged"), 401, ""},
		{"browser fetch metadata (Sec-Fetch-Site)", hdr("Sec-Fetch-Site", "cross-site"), 401, ""},
		{"browser fetch metadata (Sec-Fetch-Mode)", hdr("sec-fetch-mode", "websocket"), 401, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			header := tc.header
			if tc.name == "browser page of the gateway itself" {
				header = hdr("Origin", h.srv.URL)
			}
			got, resp := h.dial(t, "", header)
			if tc.status != 0 {
				require.Nil(t, got, "socket opened")
				assert.Equal(t, tc.status, resp.StatusCode)
				return
			}
			require.NotNil(t, got, "refused with %d", resp.StatusCode)
			assert.Equal(t, KindPlugin, got.Kind)
			assert.Equal(t, tc.as, got.Subject)
		})
	}
}

// TestLoopbackOnlyForHandshakes: a local request that is not a WebSocket
// handshake (a plain GET through Authenticate, as a page such as /whoami
// would make) is not let in as the loopback plugin.
func TestLoopbackOnlyForHandshakes(t *testing.T) {
	h := newHarness(t, Options{InsecureTrustLoopback: true})
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, err := http.NewRequest(method, h.srv.URL+"/chat", nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, method)
	}
	assert.Zero(t, h.handled.Load())
	for name, r := range map[string]*http.Request{
		"no Upgrade":               newRequest("Connection", "Upgrade"),
		"no Connection: Upgrade":   newRequest("Upgrade", "websocket"),
		"upgrade to another thing": newRequest("Connection", "Upgrade", "Upgrade", "h2c"),
	} {
		r.RemoteAddr = "127.0.0.1:5000"
		assert.False(t, loopbackTrusted(r), name)
	}
}

// handshakeRequest returns a WebSocket handshake from 192.0.2.1.
func handshakeRequest() *http.Request {
	return newRequest("Connection", "Upgrade", "Upgrade", "websocket")
}

func TestLoopbackOnlyRemoteAddrCounts(t *testing.T) {
	for remote, want := range map[string]bool{
		"127.0.0.1:5000":        true,
		"127.8.9.10:5000":       true,
		"[::1]:5000":            true,
		"[::ffff:127.0.0.1]:80": true,
		"192.0.2.1:5000":        false,
		"[2001:db8::1]:5000":    false,
		"[::]:5000":             false,
		"0.0.0.0:5000":          false,
		"localhost:5000":        false,
		"@":                     false,
		"":                      false,
	} {
		r := handshakeRequest()
		r.RemoteAddr = remote
		assert.Equal(t, want, loopbackTrusted(r), remote)
	}
	// Trusting a proxy for X-Forwarded-For does not make it trusted
	// for loopback, and the header cannot make a remote client local.
	m, err := New(Options{PluginKeys: mustKeys(t), InsecureTrustLoopback: true, TrustedProxies: []string{"192.0.2.0/24"}})
	require.NoError(t, err)
	r := handshakeRequest()
	r.Header.Set("X-Forwarded-For", "127.0.0.1")
	_, err = m.Authenticate(r)
	assert.ErrorIs(t, err, ErrNoCredentials)
}

// TestLoopbackBehindReverseProxy puts a real reverse proxy (httputil) on
// the same host in front of the gateway. Everything the proxy forwards
// reaches the gateway from 127.0.0.1, outside clients included; the
// gateway must not trust them.
func TestLoopbackBehindReverseProxy(t *testing.T) {
	h := newHarness(t, Options{InsecureTrustLoopback: true})
	target, err := url.Parse(h.srv.URL)
	require.NoError(t, err)

	proxies := map[string]http.Handler{
		"Director (adds X-Forwarded-For)": httputil.NewSingleHostReverseProxy(target),
		"Rewrite with SetXForwarded": &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		}},
	}
	for name, proxy := range proxies {
		t.Run(name, func(t *testing.T) {
			// The test network is loopback only, so the proxy is told
			// its client is outside, as it would be on a public port.
			outside := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.RemoteAddr = "203.0.113.7:40000"
				proxy.ServeHTTP(w, r)
			})
			srv := httptest.NewServer(outside)
			defer srv.Close()
			via := &harness{srv: srv, sessions: h.sessions}

			before := h.handled.Load()
			got, resp := via.dial(t, "", nil)
			require.Nil(t, got, "an outside client was trusted as loopback through the proxy")
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			assert.Equal(t, before, h.handled.Load())

			// The proxy does carry WebSockets: a plugin with its key
			// gets through it.
			got, _ = via.dial(t, "", hdr(PluginTokenHeader, testKey))
			require.NotNil(t, got)
			assert.Equal(t, "telegram", got.Subject)
		})
	}
}
