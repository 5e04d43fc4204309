package wsauth

import (
	"errors"
	"time"
)

// Methods a request is authenticated by, as reported in [Event.Method] and
// in the audit log.
const (
	MethodPlugin   = "plugin"   // an X-Plugin-Token header
	MethodSession  = "session"  // the session validator
	MethodLoopback = "loopback" // [Options.InsecureTrustLoopback]
)

// Outcome is the result of one decision, for metrics and the audit log.
type Outcome string

// Outcomes of a decision; every refusal maps to exactly one.
const (
	OutcomeAccepted      Outcome = "accepted"
	OutcomeNoCredentials Outcome = "no_credentials"        // 401
	OutcomeInvalid       Outcome = "invalid_credentials"   // 401
	OutcomeAmbiguous     Outcome = "ambiguous_credentials" // 400
	OutcomeForbidden     Outcome = "forbidden_origin"      // 403
	OutcomeThrottled     Outcome = "throttled"             // 429
	OutcomeUnavailable   Outcome = "unavailable"           // 503
	OutcomeInternal      Outcome = "internal_error"        // 500
)

// OutcomeOf returns the outcome of a decision that ended in err: accepted
// for a nil error, otherwise the refusal err wraps.
func OutcomeOf(err error) Outcome {
	switch {
	case err == nil:
		return OutcomeAccepted
	case errors.Is(err, ErrInternal):
		return OutcomeInternal
	case errors.Is(err, ErrThrottled):
		return OutcomeThrottled
	case errors.Is(err, ErrAmbiguousCredentials):
		return OutcomeAmbiguous
	case errors.Is(err, ErrNoCredentials):
		return OutcomeNoCredentials
	case errors.Is(err, ErrInvalidCredentials):
		return OutcomeInvalid
	case errors.Is(err, ErrForbiddenOrigin):
		return OutcomeForbidden
	case errors.Is(err, ErrUnavailable):
		return OutcomeUnavailable
	default:
		return OutcomeInternal
	}
}

// Event describes one decision of the middleware for an [Observer]. It
// holds no identity and no credential.
type Event struct {
	// Method is [MethodPlugin], [MethodSession] or [MethodLoopback]. A
	// throttled request is counted under the method it would have used.
	Method string
	// Outcome is what was decided.
	Outcome Outcome
	// ValidatorLatency is how long the session validator took, or zero
	// if it was not called.
	ValidatorLatency time.Duration
}

// Observer receives one [Event] per decision, for metrics: counts by
// method and outcome, and the session validator's latency. Observe is
// called on the request's goroutine before the response is written, so it
// must be quick and must not block; it must be safe for concurrent use.
type Observer interface {
	Observe(Event)
}

// ObserverFunc adapts a function to an [Observer].
type ObserverFunc func(Event)

// Observe calls f(e).
func (f ObserverFunc) Observe(e Event) { f(e) }
