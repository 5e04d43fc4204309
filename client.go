package wsauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// HandshakeError is returned by [DialPlugin] when the gateway answered the
// handshake with an HTTP status instead of upgrading.
type HandshakeError struct {
	// StatusCode is the HTTP status of the refusal.
	StatusCode int
	// RetryAfter is the wait the gateway asked for (Retry-After), or zero.
	RetryAfter time.Duration
	// Err is the error the WebSocket client returned.
	Err error
}

// Error describes the refusal. It never contains the key.
func (e *HandshakeError) Error() string {
	return fmt.Sprintf("wsauth: gateway refused the handshake: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// Unwrap returns the WebSocket client's error.
func (e *HandshakeError) Unwrap() error { return e.Err }

// Retryable reports whether trying again later may succeed: true for 429
// and for 5xx (the gateway or its auth service is unavailable), false for a
// refused credential (401, 403, 400), which will be refused again until the
// key is fixed, and for a redirect, which a plugin never follows.
func (e *HandshakeError) Retryable() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// DialPlugin opens a WebSocket connection to a gateway as a plugin,
// presenting key in the X-Plugin-Token header. opts may be nil; it is not
// modified. If the gateway refuses the handshake, the error is a
// *[HandshakeError] carrying the status, so that a plugin can stop on a
// wrong key and retry when the gateway is down:
//
//	var he *wsauth.HandshakeError
//	if errors.As(err, &he) && !he.Retryable() {
//		log.Fatal(err) // wrong key: retrying will not help
//	}
//
// Any other error (the gateway is unreachable) is returned as is and is
// worth retrying. DialPlugin never follows a redirect: the key would travel
// to wherever it points. Use wss:// outside a trusted network: the key travels in
// a header and is only as private as the connection.
func DialPlugin(ctx context.Context, url, key string, opts *websocket.DialOptions) (*websocket.Conn, error) {
	if key == "" {
		return nil, errors.New("wsauth: DialPlugin: empty plugin key")
	}
	var o websocket.DialOptions
	if opts != nil {
		o = *opts
	}
	o.HTTPHeader = o.HTTPHeader.Clone()
	if o.HTTPHeader == nil {
		o.HTTPHeader = make(http.Header)
	}
	o.HTTPHeader.Set(PluginTokenHeader, key)
	// Go's HTTP client copies custom headers onto a redirected request,
	// even to another host or from https to http: a redirect would hand
	// the key to whoever it points at. A plugin follows no redirect; the
	// 3xx is returned as a HandshakeError.
	client := http.DefaultClient
	if o.HTTPClient != nil {
		client = o.HTTPClient
	}
	noRedirect := *client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	o.HTTPClient = &noRedirect
	c, resp, err := websocket.Dial(ctx, url, &o)
	if err == nil {
		return c, nil
	}
	if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		he := &HandshakeError{StatusCode: resp.StatusCode, Err: err}
		if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
			he.RetryAfter = time.Duration(s) * time.Second
		}
		return nil, he
	}
	return nil, err
}
