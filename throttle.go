package wsauth

import (
	"container/list"
	"context"
	"errors"
	"fmt"
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
// [ErrThrottled] (429 with Retry-After) before anything else is looked at:
// no key is compared and the session validator is not called.
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
	// the address whose last failure is oldest is forgotten. It does not
	// apply to a custom Store. Default: [DefaultMaxClients].
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
// drained away. The zero time means the store knows nothing of the client.
//
// Implementations must be safe for concurrent use. An error from Drained
// means the middleware cannot tell whether the client may try: it refuses
// the request with 503 ([ErrUnavailable]). An error from Fail is logged and
// the failure is lost.
type ThrottleStore interface {
	// Drained returns the time at which client's failures drain away.
	Drained(ctx context.Context, client string) (time.Time, error)
	// Fail records a failure of client: it sets client's time to the
	// later of its stored time and now, plus cost. The update must be
	// atomic, so that concurrent failures all count.
	Fail(ctx context.Context, client string, now time.Time, cost time.Duration) error
}

// throttle is failure throttling as configured for one middleware. It is a
// token bucket kept as one time per client (the generic cell rate
// algorithm): each failure pushes the client's time forward by cost, and a
// client whose time lies more than tolerance ahead of now is throttled.
type throttle struct {
	store     ThrottleStore
	cost      time.Duration // Window / MaxFailures
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
	t := &throttle{store: o.Store, cost: cost, tolerance: o.Window - cost, v6bits: o.IPv6Prefix}
	if t.store == nil {
		t.store = newMemoryStore(o.MaxClients)
	}
	return t, nil
}

// wait returns how long the client at addr (remote: the connection's own
// address) must wait before its next attempt; zero means it may try now.
// Every request asks, and most come from clients that have never failed:
// the built-in store is asked without copying the client's key to the
// heap, and the clock is read only for a client the store knows.
func (t *throttle) wait(ctx context.Context, addr netip.Addr, remote string, clock func() time.Time) (time.Duration, error) {
	var buf [64]byte
	client := t.appendKey(buf[:0], addr, remote)
	var drained time.Time
	if s, ok := t.store.(*memoryStore); ok {
		drained = s.drained(client)
	} else {
		var err error
		if drained, err = t.store.Drained(ctx, string(client)); err != nil {
			return 0, err
		}
	}
	if drained.IsZero() {
		return 0, nil
	}
	now := clock()
	if !drained.After(now.Add(t.tolerance)) {
		return 0, nil
	}
	return drained.Sub(now) - t.tolerance, nil
}

// fail records a failure of client.
func (t *throttle) fail(ctx context.Context, client string, now time.Time) error {
	return t.store.Fail(ctx, client, now, t.cost)
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
	return string(t.appendKey(nil, addr, remote))
}

// appendKey appends the key of [throttle.key] to b.
func (t *throttle) appendKey(b []byte, addr netip.Addr, remote string) []byte {
	if !addr.IsValid() {
		return append(append(b, "remote:"...), truncate(remote, 64)...)
	}
	if addr.Is4() {
		return addr.AppendTo(b)
	}
	p, _ := addr.Prefix(t.v6bits)
	return p.AppendTo(b)
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

// memoryStore is the default ThrottleStore: a map with a fixed capacity
// that forgets the client whose last failure is oldest when it is full.
type memoryStore struct {
	mu      sync.Mutex
	max     int
	entries map[string]*list.Element // of *memoryEntry
	lru     list.List                // most recent failure at the front
}

type memoryEntry struct {
	client  string
	drained time.Time
}

func newMemoryStore(max int) *memoryStore {
	return &memoryStore{max: max, entries: make(map[string]*list.Element)}
}

func (s *memoryStore) Drained(_ context.Context, client string) (time.Time, error) {
	return s.drained([]byte(client)), nil
}

// drained is Drained for a key held in a byte slice, which the map lookup
// does not copy.
func (s *memoryStore) drained(client []byte) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[string(client)]; ok {
		return e.Value.(*memoryEntry).drained
	}
	return time.Time{}
}

func (s *memoryStore) Fail(_ context.Context, client string, now time.Time, cost time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[client]; ok {
		me := e.Value.(*memoryEntry)
		if me.drained.Before(now) {
			me.drained = now
		}
		me.drained = me.drained.Add(cost)
		s.lru.MoveToFront(e)
		return nil
	}
	if len(s.entries) >= s.max {
		oldest := s.lru.Back()
		s.lru.Remove(oldest)
		delete(s.entries, oldest.Value.(*memoryEntry).client)
	}
	s.entries[client] = s.lru.PushFront(&memoryEntry{client: client, drained: now.Add(cost)})
	return nil
}

// len returns the number of clients remembered.
func (s *memoryStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// checkThrottle refuses r, before its credentials are looked at, if its
// client has no attempt left. It reports whether r was refused.
func (m *Middleware) checkThrottle(r *http.Request, client netip.Addr) (decision, bool) {
	if m.throttle == nil {
		return decision{}, false
	}
	wait, err := m.throttle.wait(r.Context(), client, r.RemoteAddr, m.now)
	if err == nil && wait <= 0 {
		return decision{}, false
	}
	d := decision{method: MethodSession}
	if _, ok := r.Header[PluginTokenHeader]; ok {
		d.method = MethodPlugin
	}
	if err != nil {
		d.err = &RetryError{Err: fmt.Errorf("%w: throttle store: %w", ErrUnavailable, err), After: m.retryAfter}
		d.reason = "throttle store failed: " + err.Error()
	} else {
		d.err = &RetryError{Err: ErrThrottled, After: wait}
		d.reason = "too many failed attempts from this client"
	}
	return d, true
}

// recordFailure counts a failed decision against its client.
func (m *Middleware) recordFailure(r *http.Request, client netip.Addr, d *decision) {
	if m.throttle == nil || !isFailure(d.err) {
		return
	}
	if err := m.throttle.fail(r.Context(), m.throttle.key(client, r.RemoteAddr), m.now()); err != nil {
		d.reason += "; throttle store failed: " + err.Error()
	}
}
