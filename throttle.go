package wsauth

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Defaults for [ThrottleOptions] fields left at their zero value.
const (
	DefaultMaxFailures    = 10
	DefaultThrottleWindow = time.Minute
	DefaultMaxClients     = 65536
	DefaultIPv6Prefix     = 64
)

// ThrottleOptions configures failure throttling, which is on by default.
//
// A failure is a credential that was presented and refused: a wrong plugin
// key, a forged, expired or revoked session ([ErrInvalidCredentials]), or
// more than one plugin token ([ErrAmbiguousCredentials]). Requests without
// any credential, from a foreign origin, or refused because the session
// validator could not decide do not count. A success does not wipe out
// earlier failures, so that a client holding one valid credential cannot
// use it to keep guessing another.
//
// Every client address may fail MaxFailures times in a row; after that it
// regains one attempt every Window/MaxFailures, and a client that stops
// failing for Window is forgiven entirely. While a client has no attempt
// left, every request from its address, valid or not, is refused with
// [ErrThrottled] (429 with Retry-After, at most Window) before anything
// else is looked at: no key is compared and the session validator is not
// called.
//
// A request takes one of its client's attempts before its credential is
// looked at and gives it back once it is decided, unless it failed. So
// concurrent requests cannot all slip past the check before the first of
// them has failed: however many a client sends at once, at most
// MaxFailures of them reach the key comparison or the session validator
// before it is throttled. The price: one address can have at most
// MaxFailures requests being decided at the same moment, and a burst
// beyond that (many handshakes from one NAT waiting for a slow auth
// service) is refused with 429 until one is decided.
//
// The trade-off: the count is per address, not per person. Clients that
// share one public address (behind a NAT, a corporate proxy, a carrier-grade
// NAT, or one IPv6 /64) share one budget, so a guessing neighbour can lock
// them out for a while. Keying on anything the client sends instead (a
// user name, a cookie) would let the attacker pick a fresh key for every
// guess. Plugins normally connect from their own address; raise MaxFailures
// if many browsers share yours.
type ThrottleOptions struct {
	// Disabled turns throttling off. Default: false, throttling is on.
	Disabled bool

	// MaxFailures is how many failures in a row one client address may
	// have before it is refused with 429. Default: [DefaultMaxFailures].
	MaxFailures int

	// Window is how long it takes a throttled client to regain all of
	// its attempts; it regains one every Window/MaxFailures. Default:
	// [DefaultThrottleWindow].
	Window time.Duration

	// MaxClients bounds how many client addresses the built-in store
	// remembers, so memory stays bounded however many addresses an
	// attacker uses (an entry takes about 200 bytes). When it is full,
	// an address with no failure left is forgotten first, and only then
	// the address whose last failure is oldest. It does not apply to a
	// custom Store. Default: [DefaultMaxClients].
	MaxClients int

	// IPv6Prefix is the length of the prefix IPv6 clients are grouped by:
	// one host usually owns a whole /64, so counting single addresses
	// would give it 2^64 budgets. Default: [DefaultIPv6Prefix]. IPv4
	// clients are counted by single address.
	IPv6Prefix int

	// Store keeps the failures of each client. Default: an in-memory
	// store private to the middleware, so each replica of a gateway
	// counts on its own. Plug in a shared store to count across replicas.
	Store ThrottleStore
}

// ThrottleStore keeps the failures of each client address. A client's
// state is a single time: the moment its recorded failures will have
// drained away. A client the store knows nothing of has the zero time.
//
// Every request charges its client one failure in advance (Reserve), before
// its credential is looked at, and takes the charge back (Refund) once it
// is decided, unless it failed. Each method must change a client's time
// atomically, so that concurrent requests, on one replica or many, all
// count. Implementations must be safe for concurrent use.
//
// An error from Reserve means the middleware cannot tell whether the
// client may try: it refuses the request with 503 ([ErrUnavailable]). An
// error from Refund is logged, and the charge stays: the request counts as
// a failure.
type ThrottleStore interface {
	// Reserve charges client one failure at now, unless it has no
	// attempt left. If client's time is later than now plus window minus
	// cost, Reserve changes nothing and returns that time and false.
	// Otherwise it sets the time to the later of the stored time and
	// now, plus cost (so at most now plus window), and returns the new
	// time and true.
	Reserve(ctx context.Context, client string, now time.Time, cost, window time.Duration) (drained time.Time, ok bool, err error)
	// Refund takes back a charge of cost that Reserve made: it moves
	// client's time back by cost. A time that is then not later than
	// now means the client has no failures left.
	Refund(ctx context.Context, client string, now time.Time, cost time.Duration) error
}

// throttle is failure throttling as configured for one middleware. It is a
// token bucket kept as one time per client (the generic cell rate
// algorithm): each failure pushes the client's time forward by cost, and a
// client whose time lies more than tolerance ahead of now is throttled.
type throttle struct {
	store     ThrottleStore
	cost      time.Duration // Window / MaxFailures
	window    time.Duration // Window
	tolerance time.Duration // Window - cost
	v6bits    int
}

func newThrottle(o ThrottleOptions) (*throttle, error) {
	if o.Disabled {
		return nil, nil
	}
	if o.MaxFailures < 0 || o.Window < 0 || o.MaxClients < 0 || o.IPv6Prefix < 0 || o.IPv6Prefix > 128 {
		return nil, errors.New("wsauth: throttle options must not be negative, and IPv6Prefix must be at most 128")
	}
	if o.MaxFailures == 0 {
		o.MaxFailures = DefaultMaxFailures
	}
	if o.Window == 0 {
		o.Window = DefaultThrottleWindow
	}
	if o.MaxClients == 0 {
		o.MaxClients = DefaultMaxClients
	}
	if o.IPv6Prefix == 0 {
		o.IPv6Prefix = DefaultIPv6Prefix
	}
	cost := o.Window / time.Duration(o.MaxFailures)
	if cost <= 0 {
		return nil, fmt.Errorf("wsauth: throttle window %v is too short for %d failures", o.Window, o.MaxFailures)
	}
	t := &throttle{store: o.Store, cost: cost, window: o.Window, tolerance: o.Window - cost, v6bits: o.IPv6Prefix}
	if t.store == nil {
		t.store = newMemoryStore(o.MaxClients)
	}
	return t, nil
}

// reserve charges client one failure in advance. It returns how long the
// client must wait if it has no attempt left, and zero if the charge was
// made.
func (t *throttle) reserve(ctx context.Context, client string, now time.Time) (time.Duration, error) {
	drained, ok, err := t.store.Reserve(ctx, client, now, t.cost, t.window)
	switch {
	case err != nil:
		return 0, err
	case ok:
		return 0, nil
	}
	// A shared store whose replicas' clocks disagree can hold a time
	// further ahead than one charge puts it: no client is told to wait
	// longer than the window.
	return min(max(drained.Sub(now)-t.tolerance, time.Nanosecond), t.window), nil
}

// refund takes back the charge of a request that did not fail.
func (t *throttle) refund(ctx context.Context, client string, now time.Time) error {
	return t.store.Refund(ctx, client, now, t.cost)
}

// isFailure reports whether a decision that ended in err counts against
// the client: a credential that was presented and refused.
func isFailure(err error) bool {
	return errors.Is(err, ErrInvalidCredentials) || errors.Is(err, ErrAmbiguousCredentials)
}

// key returns the string a client address is counted under: an IPv4
// address as is, an IPv6 address grouped by its prefix, and a remote
// address that is not an IP address (a Unix socket) as a bounded string.
func (t *throttle) key(addr netip.Addr, remote string) string {
	if !addr.IsValid() {
		return "remote:" + truncate(remote, 64)
	}
	if addr.Is4() {
		return addr.String()
	}
	p, _ := addr.Prefix(t.v6bits)
	return p.String()
}

// clientAddr returns the address of the client that sent r: the remote
// address of the connection, unless that is a trusted proxy; then the
// X-Forwarded-For header is read from the right, skipping trusted proxies,
// and the first address that is not one is the client. If the header is
// missing, malformed, or lists only trusted proxies, the nearest address
// that could be parsed counts, so that garbage in a forged header never
// gives a client a budget of its own. It returns the invalid Addr if the
// remote address is not an IP address.
func (m *Middleware) clientAddr(r *http.Request) netip.Addr {
	addr := remoteAddr(r)
	if !addr.IsValid() || !m.trustedProxy(addr) {
		return addr
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		rest := xff[i]
		for rest != "" {
			var hop string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				rest, hop = rest[:j], rest[j+1:]
			} else {
				rest, hop = "", rest
			}
			a, ok := parseHop(hop)
			if !ok {
				return addr
			}
			addr = a
			if !m.trustedProxy(a) {
				return a
			}
		}
	}
	return addr
}

// remoteAddr parses r.RemoteAddr, "ip:port" as set by net/http.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		// Some servers and tests set a bare address.
		a, err := netip.ParseAddr(r.RemoteAddr)
		if err != nil {
			return netip.Addr{}
		}
		return a.WithZone("").Unmap()
	}
	return ap.Addr().WithZone("").Unmap()
}

// parseHop parses one X-Forwarded-For entry: an address, or an address
// with a port as some proxies write it.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.WithZone("").Unmap(), true
}

func (m *Middleware) trustedProxy(a netip.Addr) bool {
	for _, p := range m.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseTrustedProxies parses addresses and CIDR prefixes.
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("wsauth: trusted proxy %q: want an IP address or a CIDR prefix", s)
			}
			a = a.WithZone("").Unmap()
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Bits() == 0 {
			return nil, fmt.Errorf("wsauth: trusted proxy %q would let every client choose its own address", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// memoryStore is the default ThrottleStore: a map with a fixed capacity.
// Its list is ordered by eviction: a client with failures moves to the
// front whenever it is charged, and one whose charges are all refunded
// moves to the back, so that when the map is full, clients that merely
// passed through are forgotten before any that failed, and among those
// the one whose last failure is oldest goes first.
type memoryStore struct {
	mu      sync.Mutex
	max     int
	entries map[string]*list.Element // of *memoryEntry
	lru     list.List                // most recent charge at the front
}

type memoryEntry struct {
	client  string
	drained time.Time
}

func newMemoryStore(max int) *memoryStore {
	return &memoryStore{max: max, entries: make(map[string]*list.Element)}
}

func (s *memoryStore) Reserve(_ context.Context, client string, now time.Time, cost, window time.Duration) (time.Time, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[client]
	if !ok {
		if len(s.entries) >= s.max {
			oldest := s.lru.Back()
			s.lru.Remove(oldest)
			delete(s.entries, oldest.Value.(*memoryEntry).client)
		}
		e = s.lru.PushFront(&memoryEntry{client: client})
		s.entries[client] = e
	}
	me := e.Value.(*memoryEntry)
	if me.drained.After(now.Add(window - cost)) {
		return me.drained, false, nil
	}
	if me.drained.Before(now) {
		me.drained = now
	}
	me.drained = me.drained.Add(cost)
	s.lru.MoveToFront(e)
	return me.drained, true, nil
}

func (s *memoryStore) Refund(_ context.Context, client string, now time.Time, cost time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[client]
	if !ok {
		return nil // forgotten meanwhile, and its charge with it
	}
	me := e.Value.(*memoryEntry)
	me.drained = me.drained.Add(-cost)
	if !me.drained.After(now) {
		s.lru.MoveToBack(e)
	}
	return nil
}

// len returns the number of clients remembered.
func (s *memoryStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// checkThrottle takes one of the client's attempts for r, before r's
// credentials are looked at, and refuses r if none is left or the store
// failed. It reports whether r was refused.
func (m *Middleware) checkThrottle(r *http.Request, client string) (decision, bool) {
	if m.throttle == nil {
		return decision{}, false
	}
	d := decision{method: MethodSession}
	if _, ok := r.Header[PluginTokenHeader]; ok {
		d.method = MethodPlugin
	}
	wait, err := m.throttle.reserve(r.Context(), client, m.now())
	switch {
	case err != nil:
		d.err = &RetryError{Err: fmt.Errorf("%w: throttle store: %w", ErrUnavailable, err), After: m.retryAfter}
		d.reason = "throttle store failed: " + redactedError(err)
	case wait > 0:
		d.err = &RetryError{Err: ErrThrottled, After: wait}
		d.reason = "too many failed attempts from this client"
	default:
		return decision{}, false
	}
	return d, true
}

// settleThrottle gives back the attempt that checkThrottle took for r,
// unless r failed. If the store cannot take the charge back, the attempt
// counts as a failure, and that is logged.
func (m *Middleware) settleThrottle(r *http.Request, client string, d *decision) {
	if m.throttle == nil || isFailure(d.err) {
		return
	}
	if err := m.throttle.refund(r.Context(), client, m.now()); err != nil && m.logger != nil {
		m.logger.LogAttrs(r.Context(), slog.LevelWarn, "wsauth: throttle store failed to give back an attempt; it counts as a failure",
			slog.String("client", client), slog.String("reason", redactedError(err)))
	}
}
