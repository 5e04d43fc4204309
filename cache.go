package wsauth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults for [SessionCacheOptions] fields left at their zero value.
const (
	DefaultCacheTTL         = 30 * time.Second
	DefaultCacheNegativeTTL = 5 * time.Second
	DefaultCacheMaxEntries  = 10000
)

// SessionCacheOptions configures the cache made by [NewSessionCache].
type SessionCacheOptions struct {
	// TTL is how long a valid session is remembered. An entry never
	// outlives the session's own Expires. Default: [DefaultCacheTTL].
	TTL time.Duration

	// NegativeTTL is how long a refused credential (no session, or a
	// forged, revoked or expired one) is remembered, so that a client
	// retrying a bad cookie does not reach the auth service every time.
	// Default: [DefaultCacheNegativeTTL].
	NegativeTTL time.Duration

	// MaxEntries bounds the number of remembered credentials. When it is
	// reached, expired entries are dropped first, then arbitrary ones.
	// Default: [DefaultCacheMaxEntries].
	MaxEntries int

	// CredentialHeaders are the request headers that carry the
	// credential the wrapped validator checks; the cache key is made of
	// their values, and a request that carries none of them is passed
	// to the validator uncached. A validator that reads anything else
	// (another header, the client's address) must not be cached, or must
	// have those headers listed here, or two clients could share an
	// answer. Default: Cookie and Authorization.
	CredentialHeaders []string
}

// defaultCredentialHeaders are the headers that carry a session: a cookie,
// or a bearer token.
var defaultCredentialHeaders = []string{"Cookie", "Authorization"}

// credentialHeaders returns the headers that carry the credential v
// checks: those of a cache's CredentialHeaders, or the default ones.
func credentialHeaders(v SessionValidator) []string {
	if c, ok := v.(*sessionCache); ok {
		return c.headers
	}
	return defaultCredentialHeaders
}

// sessionCache is the validator returned by NewSessionCache.
type sessionCache struct {
	next    SessionValidator
	ttl     time.Duration
	negTTL  time.Duration
	max     int
	headers []string // canonical header keys
	macs    sync.Pool
	flight  singleflight.Group
	now     func() time.Time

	mu        sync.Mutex
	entries   map[cacheKey]*cacheEntry // never modified once stored
	nextSweep time.Time
}

// cacheKey is HMAC-SHA256 of a request's credential under a key drawn at
// random for each cache, so that no credential is kept as a map key and
// keys cannot be predicted from outside the process.
type cacheKey [sha256.Size]byte

type cacheEntry struct {
	id    Identity // valid if err is nil
	err   error    // wraps ErrInvalidCredentials or ErrNoCredentials
	until time.Time
}

// macState is a reusable HMAC with buffers, so that computing a key does
// not allocate.
type macState struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// NewSessionCache wraps v in a cache, so that the auth service is asked
// once per credential and TTL rather than once per handshake:
//
//   - a valid session is remembered for TTL, but never past its Expires;
//   - a refused credential ([ErrInvalidCredentials], [ErrNoCredentials]) is
//     remembered for NegativeTTL;
//   - "could not decide" (any other error, a panic, a broken contract) is
//     never remembered: the next request asks again;
//   - concurrent checks of the same credential share one call of v
//     (singleflight); a caller whose context ends first stops waiting
//     without cancelling the call for the others;
//   - entries are keyed by an HMAC of the credential headers, and their
//     number is bounded by MaxEntries.
//
// Each caller gets its own copy of the identity. A cache hit neither
// allocates beyond that copy nor sets up the middleware's deadline. The
// middleware's revalidation of live connections ([Middleware.Accept])
// bypasses remembered answers and refreshes them, so that a revoked session
// is refused on new handshakes too. The cache is safe for concurrent use.
// NewSessionCache fails if v is nil or an option is negative.
func NewSessionCache(v SessionValidator, opts SessionCacheOptions) (SessionValidator, error) {
	if v == nil {
		return nil, errors.New("wsauth: NewSessionCache: nil validator")
	}
	if opts.TTL < 0 || opts.NegativeTTL < 0 || opts.MaxEntries < 0 {
		return nil, errors.New("wsauth: NewSessionCache: TTL, NegativeTTL and MaxEntries must not be negative")
	}
	c := &sessionCache{
		next:    v,
		ttl:     opts.TTL,
		negTTL:  opts.NegativeTTL,
		max:     opts.MaxEntries,
		now:     monotonicClock(),
		entries: make(map[cacheKey]*cacheEntry),
	}
	if c.ttl == 0 {
		c.ttl = DefaultCacheTTL
	}
	if c.negTTL == 0 {
		c.negTTL = DefaultCacheNegativeTTL
	}
	if c.max == 0 {
		c.max = DefaultCacheMaxEntries
	}
	headers := opts.CredentialHeaders
	if len(headers) == 0 {
		headers = defaultCredentialHeaders
	}
	for _, h := range headers {
		c.headers = append(c.headers, http.CanonicalHeaderKey(h))
	}
	var macKey [32]byte
	if _, err := rand.Read(macKey[:]); err != nil {
		return nil, fmt.Errorf("wsauth: NewSessionCache: %w", err)
	}
	c.macs.New = func() any { return &macState{h: hmac.New(sha256.New, macKey[:])} }
	return c, nil
}

// ValidateSession implements [SessionValidator].
func (c *sessionCache) ValidateSession(ctx context.Context, r *http.Request) (*Identity, error) {
	k, ok := c.key(r)
	if !ok {
		return c.next.ValidateSession(ctx, r)
	}
	if !isRevalidation(ctx) {
		if hit, id, err := c.get(k); hit {
			if id != nil {
				u := *id
				id = &u
			}
			return id, err
		}
	}
	// The shared call must not end because the caller that started it
	// went away, but it keeps that caller's deadline.
	flightCtx := context.WithoutCancel(ctx)
	ch := c.flight.DoChan(string(k[:]), func() (any, error) {
		fctx, cancel := flightCtx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			fctx, cancel = context.WithDeadline(flightCtx, dl)
		}
		defer cancel()
		return c.fill(fctx, r, k)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		v, _ := res.Val.(*Identity)
		if v == nil {
			return nil, nil // a broken contract, for the middleware to report
		}
		id := *v
		return &id, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// lookup answers r from the cache alone; hit is false if it cannot. The
// middleware calls it before it sets up a deadline for the validator. The
// identity is the cache's own, shared with every request of the session:
// the middleware copies it and never modifies it.
func (c *sessionCache) lookup(r *http.Request) (hit bool, id *Identity, err error) {
	k, ok := c.key(r)
	if !ok || isRevalidation(r.Context()) {
		return false, nil, nil
	}
	return c.get(k)
}

// fill calls the wrapped validator and remembers a decision.
func (c *sessionCache) fill(ctx context.Context, r *http.Request, k cacheKey) (id *Identity, err error) {
	defer func() {
		// singleflight would re-panic in another goroutine, out of
		// reach of the middleware's recovery: report it as an error.
		if v := recover(); v != nil {
			id, err = nil, fmt.Errorf("%w: session validator panicked (%T)", ErrInternal, v)
		}
	}()
	id, err = c.next.ValidateSession(ctx, r)
	now := c.now()
	switch {
	case err == nil && id != nil && id.Subject != "" && !id.expired(now):
		until := now.Add(c.ttl)
		if !id.Expires.IsZero() && id.Expires.Before(until) {
			until = id.Expires
		}
		c.put(k, &cacheEntry{id: *id, until: until})
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrInternal):
	case errors.Is(err, ErrInvalidCredentials), errors.Is(err, ErrNoCredentials):
		c.put(k, &cacheEntry{err: err, until: now.Add(c.negTTL)})
	}
	return id, err
}

// get returns the remembered answer for k. The identity is the entry's
// own: the caller must not modify it.
func (c *sessionCache) get(k cacheKey) (hit bool, id *Identity, err error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[k]
	if ok && !now.Before(e.until) {
		delete(c.entries, k)
		ok = false
	}
	c.mu.Unlock()
	switch {
	case !ok:
		return false, nil, nil
	case e.err != nil:
		return true, nil, e.err
	default:
		return true, &e.id, nil
	}
}

func (c *sessionCache) put(k cacheKey, e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		now := c.now()
		if !now.Before(c.nextSweep) {
			for k, e := range c.entries {
				if !now.Before(e.until) {
					delete(c.entries, k)
				}
			}
			c.nextSweep = now.Add(min(c.ttl, c.negTTL))
		}
		for k := range c.entries {
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, k) // map order is random: an arbitrary entry
		}
	}
	c.entries[k] = e
}

// key returns the HMAC of r's credential headers, and false if r carries
// none of them.
func (c *sessionCache) key(r *http.Request) (k cacheKey, ok bool) {
	m := c.macs.Get().(*macState)
	m.buf = m.buf[:0]
	for i, name := range c.headers {
		for _, v := range r.Header[name] {
			ok = true
			// Header index and length first, so that no two different
			// sets of values give the same bytes.
			n := len(v)
			m.buf = append(m.buf, byte(i), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
			m.buf = append(m.buf, v...)
		}
	}
	if ok {
		m.h.Reset()
		m.h.Write(m.buf)
		copy(k[:], m.h.Sum(m.sum[:0]))
	}
	if cap(m.buf) <= 16<<10 {
		c.macs.Put(m)
	}
	return k, ok
}

// revalidationKey marks the context of a revalidation of a live
// connection: the cache must ask the wrapped validator, not remember.
type revalidationKey struct{}

func withRevalidation(ctx context.Context) context.Context {
	return context.WithValue(ctx, revalidationKey{}, true)
}

func isRevalidation(ctx context.Context) bool {
	return ctx.Value(revalidationKey{}) != nil
}

// monotonicClock returns a clock that reads only the monotonic clock, which
// costs half of [time.Now] and does not jump when the wall clock is set. Its
// wall time is that of the moment it was made plus the time elapsed since.
func monotonicClock() func() time.Time {
	base := time.Now()
	return func() time.Time { return base.Add(time.Since(base)) }
}
