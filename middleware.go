package wsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// Defaults for [Options] fields left at their zero value.
const (
	DefaultValidatorTimeout = 5 * time.Second
	DefaultRetryAfter       = 5 * time.Second
)

// Options configures a [Middleware]. The zero value of every field is a
// safe default, but at least one of PluginKeys and Sessions must be set.
type Options struct {
	// PluginKeys are the keys plugins authenticate with in the
	// X-Plugin-Token header. Nil or empty: the plugin path is off, and a
	// request that carries the header is refused with 401.
	PluginKeys *PluginKeys

	// Sessions checks requests that carry no plugin token. Nil: the
	// session path is off, and such requests are refused with 401.
	Sessions SessionValidator

	// AllowedOrigins lists the origins, besides the request's own host,
	// whose pages may open a session socket. A pattern is a host with an
	// optional port ("app.example.com", "localhost:3000"), optionally
	// preceded by "http://" or "https://", and optionally starting with
	// "*." for any subdomain ("*.example.com"); hosts compare case
	// insensitively and ports exactly. New refuses any other wildcard,
	// "*" alone, and anything after the host: a pattern must never allow
	// every web page to act for a signed-in user. A request without an
	// Origin header (a non-browser client) is allowed; any other origin
	// gets 403. The plugin path ignores Origin, because a browser cannot
	// set X-Plugin-Token. Default: none, only the same host.
	AllowedOrigins []string

	// ValidatorTimeout bounds one call of Sessions. A validator that
	// runs out of time gives 503. Default: [DefaultValidatorTimeout].
	ValidatorTimeout time.Duration

	// RetryAfter is the Retry-After sent with a 503 when the validator
	// could not decide and gave no time of its own. It is rounded up to
	// whole seconds. Default: [DefaultRetryAfter].
	RetryAfter time.Duration

	// ErrorHandler writes the response that refuses a request. err wraps
	// one of the package's sentinel errors; use [StatusCode] and
	// [RetryAfter] to answer. It must not write a body that says more
	// than the client needs. Default: [DefaultErrorHandler], which
	// writes the status text only.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

	// RevalidateInterval is how often the session of a connection opened
	// with [Middleware.Accept] is checked again, so that a revoked session
	// (a sign-out) closes its sockets with 4401 within this interval.
	// Connections of one session share one check per interval. A check
	// that cannot decide (the auth service is down) leaves the sockets
	// open until a later check decides or the session's own expiry
	// passes. Default: [DefaultRevalidateInterval].
	RevalidateInterval time.Duration

	// Logger receives the audit trail: one event per decision, accepted
	// requests at level Info, refused ones at Warn (Error for an internal
	// failure), with the outcome, the HTTP status and reason of a refusal,
	// the method, the identity (plugin and key name, or user and session
	// ID), the remote and client address and the origin. It never
	// receives a key, a cookie or a token. Default: nil, no logging.
	Logger *slog.Logger

	// Observer receives one [Event] per decision, for metrics: counts by
	// method and outcome, and the session validator's latency. Default:
	// nil, nothing is observed.
	Observer Observer

	// Throttle limits failed attempts per client address; see
	// [ThrottleOptions]. The zero value turns throttling on with its
	// defaults.
	Throttle ThrottleOptions

	// TrustedProxies lists the reverse proxies, as IP addresses or CIDR
	// prefixes ("10.0.0.0/8"), whose X-Forwarded-For header is believed
	// when finding a client's address for throttling and the log. It is
	// read from the right, skipping trusted proxies. Default: none; the
	// client's address is the connection's remote address and
	// X-Forwarded-For is ignored, so that a client cannot choose its own
	// address. It has no effect on InsecureTrustLoopback.
	TrustedProxies []string

	// InsecureTrustLoopback lets a request in as the plugin
	// [LoopbackPluginName] if it is a WebSocket handshake, its connection
	// comes from a loopback address (127.0.0.0/8, ::1), and it carries
	// none of the credential headers this package knows and none of the
	// headers a browser or a proxy adds: no X-Plugin-Token, Cookie,
	// Authorization, Origin, Sec-Fetch-*, Forwarded, Via, X-Real-IP or
	// X-Forwarded-*. A credential in any other header (one that a custom
	// session validator reads) is not looked for: such a request is let
	// in as the loopback plugin without being checked. Only the
	// connection's own address counts, never a forwarding header.
	//
	// It is unsafe wherever "local" does not mean "trusted": in a
	// container or pod that shares its network namespace, on a host with
	// other users, and behind a reverse proxy on the same host that adds
	// none of those headers (every request it forwards comes from
	// loopback). Give local plugins a key instead. Default: false.
	InsecureTrustLoopback bool

	// AcceptThenClose changes how a refused WebSocket handshake is
	// answered. Browsers cannot read the HTTP status of a refused
	// handshake (a page only sees close code 1006), so in this mode the
	// socket is accepted only to be closed at once with 4000 plus the
	// status (4400, 4401, 4403, 4429, 4500, 4503) and a short reason.
	// No handler runs and nothing the client sends reaches one: until
	// the client answers the close frame (five seconds at most), its
	// frames are read and discarded, which holds the request's goroutine
	// that long. Requests that are not WebSocket handshakes still get
	// the HTTP status from ErrorHandler. Default: false, refuse with an
	// HTTP status.
	AcceptThenClose bool
}

// Middleware authenticates WebSocket handshakes. Create it with [New]; it
// is safe for concurrent use.
type Middleware struct {
	keys             *PluginKeys
	sessions         SessionValidator
	origins          []originPattern
	validatorTimeout time.Duration
	retryAfter       time.Duration
	errorHandler     func(http.ResponseWriter, *http.Request, error)
	logger           *slog.Logger
	now              func() time.Time
	live             *liveSet // connections opened with Accept
	observer         Observer
	throttle         *throttle // nil: off
	trustedProxies   []netip.Prefix
	trustLoopback    bool
	acceptThenClose  bool
}

// New validates opts and returns a middleware. It fails if neither plugin
// keys nor a session validator is configured (nothing could ever
// authenticate), if an origin pattern is malformed or "*", if a trusted
// proxy is not an address or prefix, or if a duration or limit is
// negative. opts is not retained; later changes to it have no
// effect.
func New(opts Options) (*Middleware, error) {
	if opts.PluginKeys.Len() == 0 && opts.Sessions == nil {
		return nil, errors.New("wsauth: no authentication method: configure plugin keys, a session validator, or both")
	}
	if opts.ValidatorTimeout < 0 || opts.RetryAfter < 0 || opts.RevalidateInterval < 0 {
		return nil, errors.New("wsauth: ValidatorTimeout, RetryAfter and RevalidateInterval must not be negative")
	}
	m := &Middleware{
		keys:             opts.PluginKeys,
		sessions:         opts.Sessions,
		validatorTimeout: opts.ValidatorTimeout,
		retryAfter:       opts.RetryAfter,
		errorHandler:     opts.ErrorHandler,
		logger:           opts.Logger,
		now:              time.Now,
		observer:         opts.Observer,
		trustLoopback:    opts.InsecureTrustLoopback,
		acceptThenClose:  opts.AcceptThenClose,
	}
	var err error
	if m.throttle, err = newThrottle(opts.Throttle); err != nil {
		return nil, err
	}
	if m.trustedProxies, err = parseTrustedProxies(opts.TrustedProxies); err != nil {
		return nil, err
	}
	if m.validatorTimeout == 0 {
		m.validatorTimeout = DefaultValidatorTimeout
	}
	if m.retryAfter == 0 {
		m.retryAfter = DefaultRetryAfter
	}
	if m.errorHandler == nil {
		m.errorHandler = DefaultErrorHandler
	}
	for _, o := range opts.AllowedOrigins {
		p, err := parseOriginPattern(o)
		if err != nil {
			return nil, err
		}
		m.origins = append(m.origins, p)
	}
	m.live = newLiveSet(m, opts.RevalidateInterval)
	return m, nil
}

// Handler wraps next so that it runs only for authenticated requests, with
// the caller's [Identity] in the request context ([FromContext]) and the
// X-Plugin-Token header removed from the request it sees. Any other request
// is refused by the error handler, before next runs and so before any
// socket is upgraded. The ResponseWriter is passed through unwrapped, so
// the WebSocket upgrade can hijack it.
//
// Handler has the shape of middleware for http.ServeMux, chi's r.Use and
// alice: mux.Handle("/chat", m.Handler(chat)).
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := m.Authenticate(r)
		if err != nil {
			m.refuse(w, r, err)
			return
		}
		next.ServeHTTP(w, withIdentity(r, id))
	})
}

// withIdentity returns a shallow copy of r that carries id in its context
// and, for a plugin, no longer carries the plugin token. The caller's
// request and header map are left as they were.
func withIdentity(r *http.Request, id *Identity) *http.Request {
	r2 := r.WithContext(NewContext(r.Context(), id))
	if _, ok := r.Header[PluginTokenHeader]; ok {
		h := r.Header.Clone()
		delete(h, PluginTokenHeader)
		r2.Header = h
	}
	return r2
}

// Authenticate decides who r is, without writing a response: it is the
// check behind [Middleware.Handler], for callers that answer refusals
// themselves. It returns the identity, or an error wrapping one of the
// package's sentinel errors that [StatusCode] turns into the HTTP status.
// The decision is logged and observed if a logger and an observer are
// configured, and counts against the client's throttle if it failed (the
// attempt is taken before r is decided; see [ThrottleOptions]). r is not
// modified.
func (m *Middleware) Authenticate(r *http.Request) (*Identity, error) {
	client := m.clientAddr(r)
	var key string // the client as the throttle counts it
	if m.throttle != nil {
		key = m.throttle.key(client, r.RemoteAddr)
	}
	d, throttled := m.checkThrottle(r, key)
	if !throttled {
		d = m.decide(r)
		m.settleThrottle(r, key, &d)
	}
	d.client = client
	m.log(r, &d)
	if m.observer != nil {
		m.observer.Observe(Event{Method: d.method, Outcome: OutcomeOf(d.err), ValidatorLatency: d.validatorLatency})
	}
	return d.id, d.err
}

// decision is the outcome of one request, kept for the log.
type decision struct {
	id     *Identity
	err    error
	method string // MethodPlugin, MethodSession or MethodLoopback
	reason string // for the log: why, in a few words, never a secret

	client           netip.Addr    // the client's address, for the log
	validatorLatency time.Duration // zero: the validator was not called
}

func (m *Middleware) decide(r *http.Request) decision {
	if tokens, ok := r.Header[PluginTokenHeader]; ok {
		return m.decidePlugin(tokens)
	}
	if m.trustLoopback && loopbackTrusted(r) {
		return decideLoopback()
	}
	return m.decideSession(r)
}

func (m *Middleware) decidePlugin(tokens []string) decision {
	d := decision{method: MethodPlugin}
	if len(tokens) != 1 {
		d.err, d.reason = ErrAmbiguousCredentials, "more than one X-Plugin-Token header"
		return d
	}
	ks := m.keys.snapshot()
	if len(ks.digests) == 0 {
		d.err, d.reason = ErrInvalidCredentials, "plugin token presented, but no plugin keys are configured"
		return d
	}
	i := ks.match(tokens[0])
	if i < 0 {
		d.err, d.reason = ErrInvalidCredentials, "plugin token matches no configured key"
		return d
	}
	d.id = &Identity{Kind: KindPlugin, Subject: ks.plugins[i], Name: ks.plugins[i], KeyID: ks.names[i], keySum: &ks.digests[i]}
	return d
}

func (m *Middleware) decideSession(r *http.Request) decision {
	d := decision{method: MethodSession}
	if m.sessions == nil {
		d.err, d.reason = ErrNoCredentials, "no plugin token, and no session validator is configured"
		return d
	}
	// Origin is checked before the validator runs, so that a page on a
	// foreign site cannot even make the gateway query the auth service.
	if !m.originAllowed(r) {
		d.err, d.reason = ErrForbiddenOrigin, "origin not allowed for a session"
		return d
	}
	// The clock is read only when an observer wants the latency: on a
	// cache hit, reading it costs as much as the lookup.
	var start time.Time
	if m.observer != nil {
		start = time.Now()
	}
	hit, id, err := m.lookup(r)
	if !hit {
		id, err = m.validate(r)
	}
	if m.observer != nil {
		d.validatorLatency = max(time.Since(start), 1)
	}
	switch {
	case err == nil && id == nil:
		d.err, d.reason = fmt.Errorf("%w: session validator returned neither an identity nor an error", ErrInternal), "validator broke its contract"
	case err == nil && id.Subject == "":
		d.err, d.reason = fmt.Errorf("%w: session validator returned an identity without a subject", ErrInternal), "validator broke its contract"
	case err == nil && id.expired(m.now()):
		d.err, d.reason = ErrInvalidCredentials, "session expired"
	case err == nil:
		// The validator's identity may be shared (a cache hands out the
		// same one to many requests): the middleware keeps its own copy,
		// and a session never carries a plugin's marks.
		u := *id
		u.Kind, u.KeyID = KindUser, ""
		d.id = &u
	case errors.Is(err, ErrInternal):
		d.err, d.reason = err, "session validator failed: "+redactedError(err)
	case errors.Is(err, ErrNoCredentials):
		d.err, d.reason = ErrNoCredentials, "no credentials"
		if hasQueryToken(r) {
			d.reason = "no credentials (a token in the query string is not a credential)"
		}
	case errors.Is(err, ErrInvalidCredentials):
		d.err, d.reason = ErrInvalidCredentials, "session invalid"
	default:
		d.reason = "session validator could not decide: " + redactedError(err)
		after, ok := RetryAfter(err)
		if !ok || after <= 0 {
			after = m.retryAfter
		}
		if !errors.Is(err, ErrUnavailable) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		d.err = &RetryError{Err: err, After: after}
	}
	return d
}

// sessionLookup is implemented by validators that can answer some requests
// from memory, such as the session cache. The middleware asks it first, on
// the request's own goroutine and before any deadline is set up, and calls
// ValidateSession only when it reports no hit. The identity it returns may
// be shared with other requests: the caller copies it before handing it
// out, and never modifies it.
type sessionLookup interface {
	lookup(r *http.Request) (hit bool, id *Identity, err error)
}

// lookup answers r from the session validator's memory, if it has one;
// hit is false if it cannot.
func (m *Middleware) lookup(r *http.Request) (hit bool, id *Identity, err error) {
	if l, ok := m.sessions.(sessionLookup); ok {
		return l.lookup(r)
	}
	return false, nil, nil
}

// validate calls the session validator about r. A call that does not return
// within the validator timeout gives ErrUnavailable even if the validator
// ignores its context (it then finishes on its own goroutine, but never
// holds the handshake), and a panic becomes an error wrapping ErrInternal.
func (m *Middleware) validate(r *http.Request) (*Identity, error) {
	ctx, cancel := context.WithTimeout(r.Context(), m.validatorTimeout)
	defer cancel()
	type result struct {
		id  *Identity
		err error
	}
	done := make(chan result, 1)
	go func() {
		id, err := m.callValidator(ctx, r)
		done <- result{id, err}
	}()
	select {
	case res := <-done:
		return inTime(ctx, res.id, res.err)
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// inTime returns the validator's answer as the middleware takes it, given
// ctx, the context of the call: a success that arrived after ctx ended is
// not trusted more than the deadline itself, and an error that is the
// deadline means the validator could not decide.
func inTime(ctx context.Context, id *Identity, err error) (*Identity, error) {
	if err == nil && ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return id, err
}

// callValidator calls the validator and turns a panic into an error.
func (m *Middleware) callValidator(ctx context.Context, r *http.Request) (id *Identity, err error) {
	defer func() {
		if v := recover(); v != nil {
			// The panic value is not logged: it may hold whatever the
			// validator was looking at, a cookie included. Its type
			// and the stack are enough to find the bug.
			id, err = nil, fmt.Errorf("%w: session validator panicked (%T)", ErrInternal, v)
			if m.logger != nil {
				m.logger.LogAttrs(ctx, slog.LevelError, "wsauth: session validator panicked",
					slog.String("panic_type", fmt.Sprintf("%T", v)),
					slog.String("stack", string(debug.Stack())))
			}
		}
	}()
	return m.sessions.ValidateSession(ctx, r)
}

// redactedError returns err's text with the query and user info of any URL
// in it removed: an HTTP client's error quotes the URL it asked, and a
// validator that put a credential in a query string must not leak it into
// the log.
func redactedError(err error) string {
	text := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
			text = strings.ReplaceAll(text, strconv.Quote(ue.URL), strconv.Quote(u.String()))
			text = strings.ReplaceAll(text, ue.URL, u.String())
		} else {
			text = strings.ReplaceAll(text, ue.URL, "[url]")
		}
	}
	return text
}

// hasQueryToken reports whether the URL's query carries something that
// looks like a credential, so the log can say why it was ignored.
func hasQueryToken(r *http.Request) bool {
	if r.URL == nil || r.URL.RawQuery == "" {
		return false
	}
	q := strings.ToLower(r.URL.RawQuery)
	return strings.Contains(q, "token") || strings.Contains(q, "key") || strings.Contains(q, "session")
}

func (m *Middleware) log(r *http.Request, d *decision) {
	if m.logger == nil {
		return
	}
	level, msg := slog.LevelInfo, "wsauth: accepted"
	if d.err != nil {
		level, msg = slog.LevelWarn, "wsauth: refused"
		if errors.Is(d.err, ErrInternal) {
			level = slog.LevelError
		}
	}
	if !m.logger.Enabled(r.Context(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("outcome", string(OutcomeOf(d.err))),
		slog.String("method", d.method),
		slog.String("remote", truncate(r.RemoteAddr, 64)),
		slog.String("origin", truncate(r.Header.Get("Origin"), 256)),
		slog.String("path", truncate(r.URL.Path, 256)),
	)
	if d.client.IsValid() {
		attrs = append(attrs, slog.String("client", d.client.String()))
	}
	if d.err != nil {
		attrs = append(attrs, slog.Int("status", StatusCode(d.err)), slog.String("reason", d.reason))
	} else {
		attrs = append(attrs, slog.String("kind", string(d.id.Kind)), slog.String("subject", d.id.Subject))
		if d.id.KeyID != "" {
			attrs = append(attrs, slog.String("key", d.id.KeyID))
		}
		if d.id.SessionID != "" {
			attrs = append(attrs, slog.String("session", d.id.SessionID))
		}
	}
	m.logger.LogAttrs(r.Context(), level, msg, attrs...)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// DefaultErrorHandler refuses a request with the status [StatusCode] gives
// for err and the bare status text as the body: it says no more than the
// status does. For errors that invite a retry it sets Retry-After, in whole
// seconds rounded up.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, err error) {
	code := StatusCode(err)
	h := w.Header()
	if after, ok := RetryAfter(err); ok {
		h.Set("Retry-After", strconv.FormatInt(retrySeconds(after), 10))
	}
	h.Set("Cache-Control", "no-store")
	http.Error(w, http.StatusText(code), code)
}

// retrySeconds rounds d up to whole seconds, at least one.
func retrySeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
