package wsauth

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDialPlugin(t *testing.T) {
	h := newHarness(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	t.Run("right key", func(t *testing.T) {
		c, err := DialPlugin(ctx, h.wsURL(""), testKey, nil)
		require.NoError(t, err)
		defer c.CloseNow()
		var s seen
		require.NoError(t, wsjson.Read(ctx, c, &s))
		assert.Equal(t, "telegram", s.Name)
	})

	t.Run("wrong key: 401, not retryable", func(t *testing.T) {
		c, err := DialPlugin(ctx, h.wsURL(""), "wrong-"+testKey, nil)
		require.Nil(t, c)
		var he *HandshakeError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, http.StatusUnauthorized, he.StatusCode)
		assert.False(t, he.Retryable())
		assert.NotContains(t, err.Error(), testKey)
	})

	t.Run("caller's options are not modified", func(t *testing.T) {
		opts := &websocket.DialOptions{HTTPHeader: http.Header{"X-Trace": {"1"}}}
		c, err := DialPlugin(ctx, h.wsURL(""), testKey, opts)
		require.NoError(t, err)
		c.CloseNow()
		assert.Equal(t, http.Header{"X-Trace": {"1"}}, opts.HTTPHeader)
	})

	t.Run("empty key", func(t *testing.T) {
		_, err := DialPlugin(ctx, h.wsURL(""), "", nil)
		assert.Error(t, err)
	})
}

func TestDialPluginRetryable(t *testing.T) {
	// A gateway whose auth service is down answers 503 with Retry-After.
	srv := newStatusServer(t, http.StatusServiceUnavailable, "7")
	_, err := DialPlugin(context.Background(), srv, testKey, nil)
	var he *HandshakeError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, http.StatusServiceUnavailable, he.StatusCode)
	assert.Equal(t, 7*time.Second, he.RetryAfter)
	assert.True(t, he.Retryable())

	// A gateway that is not there at all: a plain network error.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	_, err = DialPlugin(context.Background(), "ws://"+addr+"/chat", testKey, nil)
	require.Error(t, err)
	assert.False(t, errors.As(err, &he))
}

func newStatusServer(t *testing.T, status int, retryAfter string) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", retryAfter)
		http.Error(w, http.StatusText(status), status)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return "ws://" + srv.Listener.Addr().String() + "/chat"
}

// TestDialPluginDoesNotFollowRedirects: a redirect must not carry the key
// to another server.
func TestDialPluginDoesNotFollowRedirects(t *testing.T) {
	var leaked atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(PluginTokenHeader) != "" {
			leaked.Store(true)
		}
		http.Error(w, "nope", http.StatusNotFound)
	}))
	defer target.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/chat", http.StatusFound)
	}))
	defer redirector.Close()

	for _, client := range []*http.Client{nil, {Timeout: 5 * time.Second}} {
		_, err := DialPlugin(context.Background(), "ws"+strings.TrimPrefix(redirector.URL, "http")+"/chat", testKey,
			&websocket.DialOptions{HTTPClient: client})
		var he *HandshakeError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, http.StatusFound, he.StatusCode)
		assert.False(t, he.Retryable())
		if client != nil {
			assert.Nil(t, client.CheckRedirect, "the caller's client is not modified")
		}
	}
	assert.False(t, leaked.Load(), "the key reached the redirect's target")
}
