package wsauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAcceptThenClose: in accept-then-close mode a refused handshake opens
// a socket that is closed at once with 4000+status and a short reason; the
// handler never runs.
func TestAcceptThenClose(t *testing.T) {
	cases := []struct {
		name   string
		header http.Header
		code   websocket.StatusCode
		reason string
	}{
		{"wrong key", hdr(PluginTokenHeader, "wrong"), 4401, "Unauthorized"},
		{"no credential", nil, 4401, "Unauthorized"},
		{"two keys", hdr(PluginTokenHeader, testKey, PluginTokenHeader, testKey), 4400, "Bad Request"},
		{"foreign origin", hdr("Cookie", testCookie+"=good-alice", "Origin", "https://evil.example"), 4403, "Forbidden"},
		{"validator down", hdr("Cookie", testCookie+"=down"), 4503, "Service Unavailable; retry after 5s"},
		{"validator panics", hdr("Cookie", testCookie+"=panic"), 4500, "Internal Server Error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{AcceptThenClose: true})
			code, reason := dialUntilClosed(t, h, tc.header)
			assert.Equal(t, tc.code, code)
			assert.Equal(t, tc.reason, reason)
			assert.Zero(t, h.handled.Load(), "the handler ran for a refused request")
		})
	}

	t.Run("throttled", func(t *testing.T) {
		h := newHarness(t, Options{AcceptThenClose: true, Throttle: ThrottleOptions{MaxFailures: 1, Window: time.Minute}})
		code, _ := dialUntilClosed(t, h, hdr(PluginTokenHeader, "wrong"))
		assert.Equal(t, websocket.StatusCode(4401), code)
		code, reason := dialUntilClosed(t, h, hdr(PluginTokenHeader, testKey))
		assert.Equal(t, websocket.StatusCode(4429), code)
		assert.Regexp(t, `^Too Many Requests; retry after [0-9]+s$`, reason)
	})

	t.Run("accepted requests are unchanged", func(t *testing.T) {
		h := newHarness(t, Options{AcceptThenClose: true})
		got, _ := h.dial(t, "", hdr(PluginTokenHeader, testKey))
		require.NotNil(t, got)
		assert.Equal(t, "telegram", got.Subject)
	})

	t.Run("a request that is no handshake gets the HTTP status", func(t *testing.T) {
		h := newHarness(t, Options{AcceptThenClose: true})
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req, err := http.NewRequest(method, h.srv.URL+"/chat", nil)
			require.NoError(t, err)
			req.Header.Set(PluginTokenHeader, "wrong")
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, method)
		}
	})
}

// dialUntilClosed opens a socket, sends a message that no handler must see
// (the server's close handshake reads and discards it), and returns the
// close code and reason the server closed with: a client that writes
// before it reads still sees them.
func dialUntilClosed(t *testing.T, h *harness, header http.Header) (websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, h.wsURL(""), &websocket.DialOptions{HTTPHeader: header})
	require.NoError(t, err, "accept-then-close must complete the handshake")
	defer c.CloseNow()
	assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	_ = c.Write(ctx, websocket.MessageText, []byte("hello"))
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	require.True(t, errors.As(err, &ce), "want a close frame, got %v", err)
	return ce.Code, ce.Reason
}

func TestCloseCodeAndReason(t *testing.T) {
	for err, want := range map[error]websocket.StatusCode{
		ErrNoCredentials:        4401,
		ErrInvalidCredentials:   4401,
		ErrAmbiguousCredentials: 4400,
		ErrForbiddenOrigin:      4403,
		ErrInternal:             4500,
		&RetryError{Err: ErrThrottled, After: time.Hour}:                     4429,
		&RetryError{Err: fmt.Errorf("%w: down", ErrUnavailable), After: 1e9}: 4503,
	} {
		assert.Equal(t, want, closeCode(err), "%v", err)
		// coder/websocket sends no close frame at all for a longer one.
		assert.LessOrEqual(t, len(closeReason(err)), 123)
		assert.NotContains(t, closeReason(err), "down", "the reason says no more than the status")
	}
}
