// Package wsauth authenticates a WebSocket endpoint before the socket is
// upgraded.
//
// Two kinds of client share one endpoint. Internal plugins (a Telegram or
// Discord bridge, a bot) prove themselves with an X-Plugin-Token header that
// is compared in constant time with the keys the gateway was given
// ([PluginKeysFromEnv], [NewPluginKeys]). Browser users fall back to a
// [SessionValidator], for example a check of a session cookie against the
// gateway's auth service. [Middleware.Handler] wraps the WebSocket handler,
// refuses everything else with an HTTP status before any socket exists, and
// puts the caller's [Identity] in the request context ([FromContext]).
//
// The package fails closed. No key configured means the plugin path is off,
// never "any token works". A plugin token that is present and wrong is final:
// the session check is not tried. A validator that errors, times out or
// panics never lets a socket open. Configuration that cannot be made safe is
// an error from [New] at start-up.
//
// A client address that keeps presenting wrong credentials is throttled
// (429) before its credentials are even compared ([ThrottleOptions]); every
// decision can be logged ([Options.Logger]) and counted ([Observer]).
package wsauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"time"
)

// Kind says how a client authenticated.
type Kind string

const (
	// KindPlugin is a server-side plugin that presented a valid plugin key.
	KindPlugin Kind = "plugin"
	// KindUser is a user with a valid session.
	KindUser Kind = "user"
)

// Identity is who an authenticated request belongs to.
type Identity struct {
	// Kind is KindPlugin or KindUser.
	Kind Kind
	// Subject is the plugin's name (the name its key was configured
	// under, without a "#label" rotation suffix) or the user's ID.
	Subject string
	// Name is a display name: the plugin's name, or the user's name.
	Name string
	// SessionID identifies the user's session. It is empty for plugins.
	// It is an identifier, never the session token itself.
	SessionID string
	// KeyID is, for plugins, the full name of the key that matched,
	// including any "#label" suffix, so that operators can see when an
	// old key during a rotation stops being used. It is empty for users.
	KeyID string
	// Expires is when the session ends. The zero time means no expiry.
	Expires time.Time

	// keySum is, for a plugin authenticated by the middleware, the
	// digest of the key that matched, so that its connections can be
	// closed when that key is removed or replaced.
	keySum *[sha256.Size]byte
}

// expired reports whether the identity's session has ended at now.
func (id *Identity) expired(now time.Time) bool {
	return !id.Expires.IsZero() && !now.Before(id.Expires)
}

type contextKey struct{}

// NewContext returns a copy of ctx that carries id.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, contextKey{}, id)
}

// FromContext returns the identity stored in ctx by [NewContext] or by
// [Middleware.Handler]. It reports false if there is none.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(contextKey{}).(*Identity)
	return id, ok && id != nil
}

// Errors returned by [Middleware.Authenticate] and by session validators.
// Test for them with [errors.Is]; [StatusCode] maps each to its HTTP status.
var (
	// ErrNoCredentials means the request carries no credential this
	// package accepts. A [SessionValidator] returns it when the request
	// has no session at all; the middleware answers 401.
	ErrNoCredentials = errors.New("wsauth: no credentials")

	// ErrInvalidCredentials means a credential is present but wrong: an
	// unknown plugin key, or a session that is forged, expired or revoked.
	// It is final: no other method is tried. The middleware answers 401.
	ErrInvalidCredentials = errors.New("wsauth: invalid credentials")

	// ErrAmbiguousCredentials means the request carries more than one
	// X-Plugin-Token header. The middleware answers 400.
	ErrAmbiguousCredentials = errors.New("wsauth: more than one plugin token")

	// ErrForbiddenOrigin means a session request came from a page on an
	// origin that is not allowed (cross-site WebSocket hijacking). The
	// middleware answers 403.
	ErrForbiddenOrigin = errors.New("wsauth: origin not allowed")

	// ErrUnavailable means the session could not be checked: the auth
	// service is down, slow or answered nonsense. The middleware answers
	// 503 with Retry-After, never 401, so that a client does not sign the
	// user out because the auth service blinked. A validator returns it
	// (wrapped) for any failure to decide; any error that is not one of
	// the sentinels above is treated the same way.
	ErrUnavailable = errors.New("wsauth: session validator unavailable")

	// ErrThrottled means the client failed too often and must wait. The
	// middleware answers 429 with Retry-After.
	ErrThrottled = errors.New("wsauth: too many failed attempts")

	// ErrInternal means the session validator panicked or broke its
	// contract. The middleware answers 500 and logs the event.
	ErrInternal = errors.New("wsauth: internal error")
)

// RetryError is an error after which the client may try again later:
// it wraps [ErrUnavailable] or [ErrThrottled] and says how long to wait.
type RetryError struct {
	Err   error
	After time.Duration
}

// Error returns the wrapped error's text.
func (e *RetryError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *RetryError) Unwrap() error { return e.Err }

// StatusCode returns the HTTP status that refuses a request which failed
// with err: 401 for missing or invalid credentials, 400 for ambiguous ones,
// 403 for a forbidden origin, 429 when throttled, 503 when the session could
// not be checked, and 500 for anything else.
func StatusCode(err error) int {
	switch {
	case errors.Is(err, ErrInternal):
		return http.StatusInternalServerError
	case errors.Is(err, ErrThrottled):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrAmbiguousCredentials):
		return http.StatusBadRequest
	case errors.Is(err, ErrNoCredentials), errors.Is(err, ErrInvalidCredentials):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbiddenOrigin):
		return http.StatusForbidden
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// RetryAfter returns how long a client refused with err should wait before
// trying again, and false if err does not invite a retry.
func RetryAfter(err error) (time.Duration, bool) {
	var re *RetryError
	if errors.As(err, &re) {
		return re.After, true
	}
	return 0, false
}
