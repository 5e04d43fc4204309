package wsauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestThrottleStopsGuessing: a client guessing from one address is cut
// off after MaxFailures, before any key is compared or the session
// validator is asked, and regains attempts at the configured rate.
func TestThrottleStopsGuessing(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, Options{Throttle: ThrottleOptions{MaxFailures: 5, Window: time.Minute}}, clock.install())

	for i := range 3 {
		_, resp := h.dial(t, "", hdr(PluginTokenHeader, fmt.Sprintf("guess-%d-%s", i, testKey)))
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	for range 2 {
		_, resp := h.dial(t, "", hdr("Cookie", testCookie+"=forged"))
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	require.EqualValues(t, 2, h.sessions.calls.Load())

	// Out of attempts: every request from this address is refused
	// before its credential is looked at, a valid one included.
	for name, header := range map[string]http.Header{
		"another guessed key":  hdr(PluginTokenHeader, "guess-x-"+testKey),
		"a forged session":     hdr("Cookie", testCookie+"=forged"),
		"the right key":        hdr(PluginTokenHeader, testKey),
		"a valid session":      hdr("Cookie", testCookie+"=good-alice"),
		"no credential at all": nil,
	} {
		got, resp := h.dial(t, "", header)
		require.Nil(t, got, name)
		assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, name)
		assert.Equal(t, "12", resp.Header.Get("Retry-After"), name)
	}
	assert.EqualValues(t, 2, h.sessions.calls.Load(), "the session validator's call count must stop growing")
	assert.Zero(t, h.handled.Load())

	// One attempt comes back every Window/MaxFailures = 12s.
	clock.Advance(12 * time.Second)
	_, resp := h.dial(t, "", hdr("Cookie", testCookie+"=forged"))
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	_, resp = h.dial(t, "", hdr("Cookie", testCookie+"=forged"))
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.EqualValues(t, 3, h.sessions.calls.Load())

	// After a whole window without failures, all is forgiven.
	clock.Advance(time.Minute)
	got, _ := h.dial(t, "", hdr(PluginTokenHeader, testKey))
	require.NotNil(t, got)
	for range 5 {
		_, resp := h.dial(t, "", hdr(PluginTokenHeader, "wrong"))
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	_, resp = h.dial(t, "", hdr(PluginTokenHeader, "wrong"))
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
}

// TestThrottleCountsOnlyFailures: requests that present no credential, a
// foreign origin, or meet an unavailable validator do not use up attempts,
// and successes do not give any back.
func TestThrottleCountsOnlyFailures(t *testing.T) {
	clock := newFakeClock()
	m, err := New(Options{PluginKeys: mustKeys(t), Sessions: &fakeSessions{},
		Throttle: ThrottleOptions{MaxFailures: 2}, Logger: auditLogger})
	require.NoError(t, err)
	m.now = clock.Now
	for range 20 {
		for _, r := range []*http.Request{
			newRequest(),
			newRequest("Cookie", testCookie+"=good-alice", "Origin", "https://evil.example"),
			newRequest("Cookie", testCookie+"=down"),
			newRequest(PluginTokenHeader, testKey),
		} {
			_, err := m.Authenticate(r)
			assert.NotErrorIs(t, err, ErrThrottled)
		}
	}
	_, err = m.Authenticate(newRequest(PluginTokenHeader, testKey, PluginTokenHeader, testKey))
	assert.ErrorIs(t, err, ErrAmbiguousCredentials)
	_, err = m.Authenticate(newRequest(PluginTokenHeader, "wrong"))
	assert.ErrorIs(t, err, ErrInvalidCredentials)
	_, err = m.Authenticate(newRequest(PluginTokenHeader, testKey))
	assert.ErrorIs(t, err, ErrThrottled)
	_, throttled := RetryAfter(err)
	assert.True(t, throttled, "a throttled request says when to retry")
}

// TestThrottleIsPerClient: one address's failures do not lock out
// another; IPv6 clients are counted per /64 by default.
func TestThrottleIsPerClient(t *testing.T) {
	cases := []struct {
		name          string
		guesser, user string
		prefix        int
		shared        bool
	}{
		{"other IPv4 address", "192.0.2.1:1", "192.0.2.2:1", 0, false},
		{"same IPv4 address, other port", "192.0.2.1:1", "192.0.2.1:2", 0, true},
		{"IPv4 and its IPv4-mapped IPv6 form", "192.0.2.1:1", "[::ffff:192.0.2.1]:2", 0, true},
		{"same IPv6 /64", "[2001:db8:1:2::1]:1", "[2001:db8:1:2:ffff::9]:1", 0, true},
		{"other IPv6 /64", "[2001:db8:1:2::1]:1", "[2001:db8:1:3::1]:1", 0, false},
		{"IPv6 counted per /128", "[2001:db8:1:2::1]:1", "[2001:db8:1:2::2]:1", 128, false},
		{"IPv6 counted per /48", "[2001:db8:1:2::1]:1", "[2001:db8:1:3::1]:1", 48, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(Options{PluginKeys: mustKeys(t), Throttle: ThrottleOptions{MaxFailures: 3, IPv6Prefix: tc.prefix}})
			require.NoError(t, err)
			for range 3 {
				r := newRequest(PluginTokenHeader, "wrong")
				r.RemoteAddr = tc.guesser
				_, err := m.Authenticate(r)
				require.ErrorIs(t, err, ErrInvalidCredentials)
			}
			r := newRequest(PluginTokenHeader, testKey)
			r.RemoteAddr = tc.user
			_, err = m.Authenticate(r)
			if tc.shared {
				assert.ErrorIs(t, err, ErrThrottled)
			} else {
				assert.NoError(t, err)
			}
		})
	}
}

// TestThrottleMemoryIsBounded: an attacker with a quarter of a million addresses does
// not make the store grow past MaxClients, and the store keeps the most
// recent failures.
func TestThrottleMemoryIsBounded(t *testing.T) {
	const maxClients = 1000
	m, err := New(Options{PluginKeys: mustKeys(t), Throttle: ThrottleOptions{MaxClients: maxClients, MaxFailures: 1}})
	require.NoError(t, err)
	store := m.throttle.store.(*memoryStore)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := newRequest(PluginTokenHeader, "wrong")
	const n = 1 << 18
	for i := range n {
		// Every request from an address of its own, IPv4 and IPv6.
		if i%2 == 0 {
			r.RemoteAddr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 1).String()
		} else {
			r.RemoteAddr = fmt.Sprintf("[2001:db8:%x:%x::1]:1", i>>16, i&0xffff)
		}
		_, err := m.Authenticate(r)
		require.ErrorIs(t, err, ErrInvalidCredentials)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	assert.Equal(t, maxClients, store.len())
	assert.Less(t, int64(after.HeapAlloc)-int64(before.HeapAlloc), int64(4<<20),
		"the heap grew by more than 4 MiB for %d remembered clients", maxClients)

	// The last address to fail is remembered (and throttled); the first
	// was forgotten to make room.
	_, err = m.Authenticate(r)
	assert.ErrorIs(t, err, ErrThrottled)
	r.RemoteAddr = "10.0.0.0:1"
	_, err = m.Authenticate(r)
	assert.ErrorIs(t, err, ErrInvalidCredentials)
}

// TestClientAddr: X-Forwarded-For is believed only from trusted proxies,
// read from the right, skipping trusted hops.
func TestClientAddr(t *testing.T) {
	m, err := New(Options{PluginKeys: mustKeys(t), TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.7"}})
	require.NoError(t, err)
	cases := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"untrusted peer, no header", "203.0.113.5:4000", nil, "203.0.113.5"},
		{"untrusted peer spoofs X-Forwarded-For", "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"untrusted peer claims to be a trusted proxy", "203.0.113.5:4000", []string{"198.51.100.1, 10.0.0.1"}, "203.0.113.5"},
		{"trusted proxy", "10.1.2.3:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"trusted proxy, single address", "192.0.2.7:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"client spoofs a hop in front of the proxy", "10.1.2.3:4000", []string{"1.1.1.1, 198.51.100.1"}, "198.51.100.1"},
		{"two trusted hops", "10.1.2.3:4000", []string{"1.1.1.1, 198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"header split over lines", "10.1.2.3:4000", []string{"1.1.1.1", "198.51.100.1", "10.9.9.9"}, "198.51.100.1"},
		{"hop with a port", "10.1.2.3:4000", []string{"198.51.100.1:5555"}, "198.51.100.1"},
		{"IPv6 hop with a port", "10.1.2.3:4000", []string{"[2001:db8::1]:5555"}, "2001:db8::1"},
		{"IPv4-mapped hop", "10.1.2.3:4000", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},
		{"trusted IPv6 proxy", "[2001:db8:ffff::1]:4000", []string{"2001:db8::2"}, "2001:db8::2"},
		{"garbage where the client should be", "10.1.2.3:4000", []string{"1.1.1.1, bogus, 10.9.9.9"}, "10.9.9.9"},
		{"empty entry", "10.1.2.3:4000", []string{"198.51.100.1, "}, "10.1.2.3"},
		{"only trusted hops", "10.1.2.3:4000", []string{"10.8.8.8, 10.9.9.9"}, "10.8.8.8"},
		{"trusted proxy, no header", "10.1.2.3:4000", nil, "10.1.2.3"},
		{"not an IP remote address", "@", []string{"198.51.100.1"}, "invalid IP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRequest()
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			assert.Equal(t, tc.want, m.clientAddr(r).String())
		})
	}
}

// TestThrottleIgnoresSpoofedForwardedFor: over real connections from one
// address, a guesser that sends a new X-Forwarded-For with every request
// is still throttled, unless its peer is a trusted proxy.
func TestThrottleIgnoresSpoofedForwardedFor(t *testing.T) {
	guess := func(h *harness, i int) int {
		_, resp := h.dial(t, "", hdr(PluginTokenHeader, "wrong", "X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i)))
		return resp.StatusCode
	}
	h := newHarness(t, Options{Throttle: ThrottleOptions{MaxFailures: 3}})
	for i := range 3 {
		assert.Equal(t, http.StatusUnauthorized, guess(h, i))
	}
	assert.Equal(t, http.StatusTooManyRequests, guess(h, 3))

	// The same requests through a trusted proxy count per client.
	h = newHarness(t, Options{Throttle: ThrottleOptions{MaxFailures: 3}, TrustedProxies: []string{"127.0.0.0/8", "::1"}})
	for i := range 6 {
		assert.Equal(t, http.StatusUnauthorized, guess(h, i))
	}
}

// failingStore is a ThrottleStore that cannot be reached.
type failingStore struct{}

var errStoreDown = errors.New("store unreachable")

func (failingStore) Reserve(context.Context, string, time.Time, time.Duration, time.Duration) (time.Time, bool, error) {
	return time.Time{}, false, errStoreDown
}

func (failingStore) Refund(context.Context, string, time.Time, time.Duration) error {
	return errStoreDown
}

// TestThrottleStoreFailsClosed: a store that cannot say whether a client
// is throttled makes the request 503, not a free pass.
func TestThrottleStoreFailsClosed(t *testing.T) {
	h := newHarness(t, Options{Throttle: ThrottleOptions{Store: failingStore{}}})
	got, resp := h.dial(t, "", hdr(PluginTokenHeader, testKey))
	require.Nil(t, got)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
}

// countingStore wraps the memory store and counts its use, as a shared
// store plugged in through ThrottleOptions.Store would be used.
type countingStore struct {
	*memoryStore
	reserves, refunds atomic.Int64
}

func (s *countingStore) Reserve(ctx context.Context, client string, now time.Time, cost, window time.Duration) (time.Time, bool, error) {
	s.reserves.Add(1)
	return s.memoryStore.Reserve(ctx, client, now, cost, window)
}

func (s *countingStore) Refund(ctx context.Context, client string, now time.Time, cost time.Duration) error {
	s.refunds.Add(1)
	return s.memoryStore.Refund(ctx, client, now, cost)
}

func TestThrottleStoreIsPluggable(t *testing.T) {
	store := &countingStore{memoryStore: newMemoryStore(10)}
	opts := Options{PluginKeys: mustKeys(t), Throttle: ThrottleOptions{MaxFailures: 2, Store: store}}
	// Two replicas sharing one store share one budget.
	a, err := New(opts)
	require.NoError(t, err)
	b, err := New(opts)
	require.NoError(t, err)
	_, err = a.Authenticate(newRequest(PluginTokenHeader, "wrong"))
	require.ErrorIs(t, err, ErrInvalidCredentials)
	_, err = b.Authenticate(newRequest(PluginTokenHeader, "wrong"))
	require.ErrorIs(t, err, ErrInvalidCredentials)
	_, err = a.Authenticate(newRequest(PluginTokenHeader, testKey))
	assert.ErrorIs(t, err, ErrThrottled)
	assert.EqualValues(t, 3, store.reserves.Load(), "every request takes an attempt")
	assert.Zero(t, store.refunds.Load(), "failed and throttled requests give none back")

	// A request that does not fail gives its attempt back.
	r := newRequest(PluginTokenHeader, testKey)
	r.RemoteAddr = "192.0.2.99:1"
	_, err = b.Authenticate(r)
	require.NoError(t, err)
	assert.EqualValues(t, 1, store.refunds.Load())
}

func TestThrottleDisabled(t *testing.T) {
	m, err := New(Options{PluginKeys: mustKeys(t), Throttle: ThrottleOptions{Disabled: true}})
	require.NoError(t, err)
	for range 100 {
		_, err := m.Authenticate(newRequest(PluginTokenHeader, "wrong"))
		require.ErrorIs(t, err, ErrInvalidCredentials)
	}
	_, err = m.Authenticate(newRequest(PluginTokenHeader, testKey))
	assert.NoError(t, err)
}

func TestNewRefusesBadThrottleOptions(t *testing.T) {
	for name, opts := range map[string]Options{
		"negative failures":          {Throttle: ThrottleOptions{MaxFailures: -1}},
		"negative window":            {Throttle: ThrottleOptions{Window: -time.Second}},
		"negative clients":           {Throttle: ThrottleOptions{MaxClients: -1}},
		"IPv6 prefix over 128":       {Throttle: ThrottleOptions{IPv6Prefix: 129}},
		"window too short":           {Throttle: ThrottleOptions{MaxFailures: 10, Window: 5}},
		"trusted proxy not an IP":    {TrustedProxies: []string{"proxy.internal"}},
		"trusted proxy is the world": {TrustedProxies: []string{"0.0.0.0/0"}},
		"trusted proxy is all IPv6":  {TrustedProxies: []string{"::/0"}},
	} {
		t.Run(name, func(t *testing.T) {
			opts.PluginKeys = mustKeys(t)
			m, err := New(opts)
			require.Error(t, err)
			assert.Nil(t, m)
			assert.Regexp(t, "^wsauth: ", err.Error())
		})
	}
}

// storeSecret stands for a credential that a shared store's client puts
// in the URLs it asks, and so in its errors.
const storeSecret = "store-access-token-that-must-not-leak"

// urlErrorStore is a ThrottleStore reached over HTTP whose errors quote the
// URL it asked, credential included. Each method fails if told to.
type urlErrorStore struct {
	*memoryStore
	failReserve, failRefund bool
}

func (s *urlErrorStore) err() error {
	return &url.Error{Op: "Get", URL: "https://store.internal/throttle?access_token=" + storeSecret, Err: errors.New("connection refused")}
}

func (s *urlErrorStore) Reserve(ctx context.Context, client string, now time.Time, cost, window time.Duration) (time.Time, bool, error) {
	if s.failReserve {
		return time.Time{}, false, s.err()
	}
	return s.memoryStore.Reserve(ctx, client, now, cost, window)
}

func (s *urlErrorStore) Refund(ctx context.Context, client string, now time.Time, cost time.Duration) error {
	if s.failRefund {
		return s.err()
	}
	return s.memoryStore.Refund(ctx, client, now, cost)
}

// TestThrottleStoreErrorsAreRedactedInTheLog: the text of a store's error
// is logged without the query of a URL it quotes.
func TestThrottleStoreErrorsAreRedactedInTheLog(t *testing.T) {
	for name, store := range map[string]*urlErrorStore{
		"taking an attempt":      {memoryStore: newMemoryStore(10), failReserve: true},
		"giving an attempt back": {memoryStore: newMemoryStore(10), failRefund: true},
	} {
		t.Run(name, func(t *testing.T) {
			logger, own := newTeeLogger()
			m, err := New(Options{PluginKeys: mustKeys(t), Throttle: ThrottleOptions{Store: store}, Logger: logger})
			require.NoError(t, err)
			_, _ = m.Authenticate(newRequest(PluginTokenHeader, testKey))
			log := own.String()
			assert.Contains(t, log, "throttle store failed")
			assert.Contains(t, log, "store.internal/throttle")
			assert.NotContains(t, log, storeSecret)
		})
	}
}

// TestThrottleHoldsAgainstConcurrentFailures: a client that sends many
// requests with forged credentials at once, so that none has failed yet
// when the others are checked, still reaches the session validator at most
// MaxFailures times, and is never told to wait longer than the window.
func TestThrottleHoldsAgainstConcurrentFailures(t *testing.T) {
	const n, maxFailures, window = 500, 10, time.Minute
	var calls, throttled atomic.Int64
	release := make(chan struct{})
	v := SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*Identity, error) {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, ErrInvalidCredentials
	})
	m, err := New(Options{Sessions: v, ValidatorTimeout: time.Minute, Logger: auditLogger,
		Throttle: ThrottleOptions{MaxFailures: maxFailures, Window: window}})
	require.NoError(t, err)
	m.now = newFakeClock().Now // frozen: no attempt comes back meanwhile

	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := m.Authenticate(newRequest("Cookie", testCookie+"=forged-"+strconv.Itoa(i)))
			if errors.Is(err, ErrThrottled) {
				throttled.Add(1)
			}
			errs <- err
		})
	}
	// Every request is either waiting in the validator or refused.
	require.Eventually(t, func() bool { return calls.Load()+throttled.Load() == n }, 30*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)

	assert.LessOrEqual(t, calls.Load(), int64(maxFailures), "session validator calls")
	for err := range errs {
		if after, ok := RetryAfter(err); ok {
			assert.LessOrEqual(t, after, window, "Retry-After of a refused request")
		}
	}
	_, err = m.Authenticate(newRequest("Cookie", testCookie+"=forged-again"))
	require.ErrorIs(t, err, ErrThrottled)
	after, _ := RetryAfter(err)
	assert.LessOrEqual(t, after, window, "Retry-After once the burst is over")
	assert.LessOrEqual(t, calls.Load(), int64(maxFailures))
}

// TestThrottleForgetsPassersByFirst: when the store is full, addresses
// that only passed through are forgotten before one that is throttled.
func TestThrottleForgetsPassersByFirst(t *testing.T) {
	m, err := New(Options{PluginKeys: mustKeys(t), Throttle: ThrottleOptions{MaxClients: 10, MaxFailures: 2}})
	require.NoError(t, err)
	guess := newRequest(PluginTokenHeader, "wrong")
	for range 2 {
		_, err := m.Authenticate(guess)
		require.ErrorIs(t, err, ErrInvalidCredentials)
	}
	for i := range 100 {
		r := newRequest(PluginTokenHeader, testKey)
		r.RemoteAddr = fmt.Sprintf("198.51.100.%d:1", i)
		_, err := m.Authenticate(r)
		require.NoError(t, err)
	}
	assert.LessOrEqual(t, m.throttle.store.(*memoryStore).len(), 10)
	_, err = m.Authenticate(guess)
	assert.ErrorIs(t, err, ErrThrottled, "the guesser was forgotten to make room for clients that never failed")
}

// TestThrottleStartsAfreshAfterAPause: failures long past do not leave a
// client with a time in the past that new failures would only push
// towards the present: after a pause, MaxFailures failures throttle it
// again.
func TestThrottleStartsAfreshAfterAPause(t *testing.T) {
	clock := newFakeClock()
	m, err := New(Options{PluginKeys: mustKeys(t), Throttle: ThrottleOptions{MaxFailures: 3, Window: time.Minute}})
	require.NoError(t, err)
	m.now = clock.Now
	guess := func() error {
		_, err := m.Authenticate(newRequest(PluginTokenHeader, "wrong"))
		return err
	}
	for round := range 2 {
		for range 3 {
			require.ErrorIs(t, guess(), ErrInvalidCredentials, "round %d", round)
		}
		require.ErrorIs(t, guess(), ErrThrottled, "round %d", round)
		clock.Advance(time.Hour)
	}
}
