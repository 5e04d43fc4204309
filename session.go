package wsauth

import (
	"context"
	"net/http"
)

// SessionValidator checks the session a request carries (typically a
// cookie) and says who it belongs to.
//
// ValidateSession returns exactly one of three outcomes:
//
//   - a non-nil *Identity and a nil error: the session is valid;
//   - an error wrapping [ErrNoCredentials] (the request carries no session)
//     or [ErrInvalidCredentials] (a session that is forged, expired or
//     revoked): the middleware answers 401;
//   - any other error, best wrapping [ErrUnavailable]: the validator could
//     not decide (the auth service is down, timed out, or answered
//     nonsense). The middleware answers 503 with Retry-After and never
//     opens a socket.
//
// ctx carries the middleware's deadline; an implementation should return
// when it ends (the middleware stops waiting for it then either way). The
// text of a returned error may be logged, with the query and user info of
// any *url.Error's URL removed; it must not contain a credential. The request must not be modified. Implementations must be safe
// for concurrent use. A returned identity's Kind is set to [KindUser] by the
// middleware whatever the validator put there: a session never makes a
// plugin.
type SessionValidator interface {
	ValidateSession(ctx context.Context, r *http.Request) (*Identity, error)
}

// SessionValidatorFunc adapts a function to a [SessionValidator].
type SessionValidatorFunc func(ctx context.Context, r *http.Request) (*Identity, error)

// ValidateSession calls f(ctx, r).
func (f SessionValidatorFunc) ValidateSession(ctx context.Context, r *http.Request) (*Identity, error) {
	return f(ctx, r)
}
