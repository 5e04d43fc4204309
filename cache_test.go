package wsauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a settable clock for cache and connection tests.
type fakeClock struct{ t atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	// Start from the real time, so that identities that tests build with
	// time.Now compare with it as they would in production.
	c.t.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.t.Add(int64(d)) }

// install returns a harness option that makes the middleware use the clock.
func (c *fakeClock) install() func(*Middleware) { return func(m *Middleware) { m.now = c.Now } }

// countingValidator answers by the value of the test session cookie and
// counts its calls. Answers are set per value with set.
type countingValidator struct {
	calls   atomic.Int64
	mu      sync.Mutex
	answers map[string]func() (*Identity, error)
}

func newCountingValidator() *countingValidator {
	return &countingValidator{answers: make(map[string]func() (*Identity, error))}
}

func (v *countingValidator) set(value string, f func() (*Identity, error)) {
	v.mu.Lock()
	v.answers[value] = f
	v.mu.Unlock()
}

func (v *countingValidator) ValidateSession(ctx context.Context, r *http.Request) (*Identity, error) {
	v.calls.Add(1)
	c, err := r.Cookie(testCookie)
	if err != nil {
		return nil, ErrNoCredentials
	}
	v.mu.Lock()
	f := v.answers[c.Value]
	v.mu.Unlock()
	if f == nil {
		return nil, ErrInvalidCredentials
	}
	return f()
}

func userUntil(name string, expires time.Time) func() (*Identity, error) {
	return func() (*Identity, error) {
		return &Identity{Kind: KindUser, Subject: "id-" + name, Name: name, SessionID: "sid-" + name, Expires: expires}, nil
	}
}

func newTestCache(t *testing.T, inner SessionValidator, opts SessionCacheOptions) (*sessionCache, *fakeClock) {
	t.Helper()
	v, err := NewSessionCache(inner, opts)
	require.NoError(t, err)
	c := v.(*sessionCache)
	clock := newFakeClock()
	c.now = clock.Now
	return c, clock
}

func cookieRequest(value string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/chat", nil)
	r.Header.Set("Cookie", testCookie+"="+value)
	return r
}

func TestCacheLifetimes(t *testing.T) {
	cases := []struct {
		name      string
		answer    func(now time.Time) func() (*Identity, error)
		hitUntil  time.Duration // still answered from the cache just before this
		wantError error
	}{
		{"valid session lives for the TTL", func(now time.Time) func() (*Identity, error) {
			return userUntil("alice", now.Add(24*time.Hour))
		}, time.Minute, nil},
		{"valid session never outlives its expiry", func(now time.Time) func() (*Identity, error) {
			return userUntil("alice", now.Add(10*time.Second))
		}, 10 * time.Second, nil},
		{"session without expiry lives for the TTL", func(now time.Time) func() (*Identity, error) {
			return userUntil("alice", time.Time{})
		}, time.Minute, nil},
		{"forged session is remembered for the negative TTL", func(time.Time) func() (*Identity, error) {
			return func() (*Identity, error) { return nil, ErrInvalidCredentials }
		}, 3 * time.Second, ErrInvalidCredentials},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inner := newCountingValidator()
			c, clock := newTestCache(t, inner, SessionCacheOptions{TTL: time.Minute, NegativeTTL: 3 * time.Second})
			inner.set("s", tc.answer(clock.Now()))
			check := func() {
				id, err := c.ValidateSession(context.Background(), cookieRequest("s"))
				if tc.wantError != nil {
					require.ErrorIs(t, err, tc.wantError)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, "alice", id.Name)
			}
			check()
			clock.Advance(tc.hitUntil - time.Millisecond)
			check()
			assert.EqualValues(t, 1, inner.calls.Load(), "answered from the cache")
			clock.Advance(time.Millisecond)
			check()
			assert.EqualValues(t, 2, inner.calls.Load(), "asked again once the entry expired")
		})
	}
}

func TestCacheNeverRemembersCouldNotDecide(t *testing.T) {
	cases := []struct {
		name   string
		answer func() (*Identity, error)
		want   error
	}{
		{"auth service down", func() (*Identity, error) { return nil, fmt.Errorf("%w: 502", ErrUnavailable) }, ErrUnavailable},
		{"unavailable and invalid at once", func() (*Identity, error) {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, ErrInvalidCredentials)
		}, ErrUnavailable},
		{"error of unknown kind", func() (*Identity, error) { return nil, errors.New("boom") }, nil},
		{"validator panics", func() (*Identity, error) { panic("bug") }, ErrInternal},
		{"neither identity nor error", func() (*Identity, error) { return nil, nil }, nil},
		{"identity without subject", func() (*Identity, error) { return &Identity{Name: "x"}, nil }, nil},
		{"already expired identity", userUntil("old", newFakeClock().Now().Add(-time.Hour)), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inner := newCountingValidator()
			inner.set("s", tc.answer)
			c, _ := newTestCache(t, inner, SessionCacheOptions{})
			for range 3 {
				_, err := c.ValidateSession(context.Background(), cookieRequest("s"))
				if tc.want != nil {
					assert.ErrorIs(t, err, tc.want)
				}
			}
			assert.EqualValues(t, 3, inner.calls.Load())
			assert.Zero(t, c.size())
		})
	}
}

// size returns the number of remembered answers, for tests.
func (c *sessionCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries) + len(c.refused)
}

// TestCacheNeverRemembersNoSession: "no session" costs the validator
// nothing to say and anyone can ask it with any junk cookie, so it is
// never remembered.
func TestCacheNeverRemembersNoSession(t *testing.T) {
	inner := newCountingValidator()
	c, _ := newTestCache(t, inner, SessionCacheOptions{})
	for range 3 {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Cookie", "theme=dark")
		_, err := c.ValidateSession(context.Background(), r)
		require.ErrorIs(t, err, ErrNoCredentials)
	}
	assert.EqualValues(t, 3, inner.calls.Load())
	assert.Zero(t, c.size())
}

func TestCacheKeys(t *testing.T) {
	inner := newCountingValidator()
	inner.set("a", userUntil("alice", time.Time{}))
	inner.set("b", userUntil("bob", time.Time{}))
	c, _ := newTestCache(t, inner, SessionCacheOptions{})

	t.Run("different credentials never share an answer", func(t *testing.T) {
		a, err := c.ValidateSession(context.Background(), cookieRequest("a"))
		require.NoError(t, err)
		b, err := c.ValidateSession(context.Background(), cookieRequest("b"))
		require.NoError(t, err)
		assert.Equal(t, "alice", a.Name)
		assert.Equal(t, "bob", b.Name)
	})

	t.Run("header boundaries are part of the key", func(t *testing.T) {
		r1 := httptest.NewRequest(http.MethodGet, "/", nil)
		r1.Header["Cookie"] = []string{"ab", "c"}
		r2 := httptest.NewRequest(http.MethodGet, "/", nil)
		r2.Header["Cookie"] = []string{"a", "bc"}
		r3 := httptest.NewRequest(http.MethodGet, "/", nil)
		r3.Header["Authorization"] = []string{"ab", "c"}
		k1, _ := c.key(r1)
		k2, _ := c.key(r2)
		k3, _ := c.key(r3)
		assert.NotEqual(t, k1, k2)
		assert.NotEqual(t, k1, k3)
	})

	t.Run("keys are not the credential and differ per cache", func(t *testing.T) {
		other, _ := newTestCache(t, inner, SessionCacheOptions{})
		k1, ok1 := c.key(cookieRequest("a"))
		k2, ok2 := other.key(cookieRequest("a"))
		require.True(t, ok1 && ok2)
		assert.NotEqual(t, k1, k2)
		assert.NotContains(t, string(k1[:]), testCookie)
	})

	t.Run("a request without credential headers is not cached", func(t *testing.T) {
		before := inner.calls.Load()
		for range 2 {
			_, err := c.ValidateSession(context.Background(), httptest.NewRequest(http.MethodGet, "/", nil))
			assert.ErrorIs(t, err, ErrNoCredentials)
		}
		assert.EqualValues(t, before+2, inner.calls.Load())
	})

	t.Run("each caller gets its own identity", func(t *testing.T) {
		a, err := c.ValidateSession(context.Background(), cookieRequest("a"))
		require.NoError(t, err)
		a.Name = "mallory"
		a2, err := c.ValidateSession(context.Background(), cookieRequest("a"))
		require.NoError(t, err)
		assert.Equal(t, "alice", a2.Name)
	})
}

func TestCacheCredentialHeaders(t *testing.T) {
	var calls atomic.Int64
	inner := SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*Identity, error) {
		calls.Add(1)
		s := r.Header.Get("X-Session")
		if s == "" {
			return nil, ErrNoCredentials
		}
		return &Identity{Subject: s, Name: s}, nil
	})
	c, _ := newTestCache(t, inner, SessionCacheOptions{CredentialHeaders: []string{"x-session"}})
	for _, s := range []string{"alice", "bob", "alice", "bob"} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-Session", s)
		r.Header.Set("Cookie", "same=for-everyone")
		id, err := c.ValidateSession(context.Background(), r)
		require.NoError(t, err)
		assert.Equal(t, s, id.Name)
	}
	assert.EqualValues(t, 2, calls.Load())
}

func TestCacheIsBounded(t *testing.T) {
	inner := SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*Identity, error) {
		return nil, ErrInvalidCredentials
	})
	c, clock := newTestCache(t, inner, SessionCacheOptions{MaxEntries: 100})
	for i := range 1000 {
		_, err := c.ValidateSession(context.Background(), cookieRequest("forged-"+strconv.Itoa(i)))
		require.ErrorIs(t, err, ErrInvalidCredentials)
		assert.LessOrEqual(t, c.size(), 100)
	}
	// Once they have expired, entries make room before live ones go.
	clock.Advance(time.Hour)
	_, _ = c.ValidateSession(context.Background(), cookieRequest("new"))
	assert.Equal(t, 1, c.size())
}

// TestCacheFloodKeepsSessions: a flood of junk cookies and of forged
// sessions, each one new, does not push the sessions of signed-in users
// out of a full cache.
func TestCacheFloodKeepsSessions(t *testing.T) {
	const max, users = 100, 60
	inner := newCountingValidator()
	c, _ := newTestCache(t, inner, SessionCacheOptions{MaxEntries: max, TTL: time.Hour, NegativeTTL: time.Hour})
	for i := range users {
		inner.set("user-"+strconv.Itoa(i), userUntil("u"+strconv.Itoa(i), time.Time{}))
		_, err := c.ValidateSession(context.Background(), cookieRequest("user-"+strconv.Itoa(i)))
		require.NoError(t, err)
	}
	for i := range 5000 {
		junk := httptest.NewRequest(http.MethodGet, "/", nil)
		junk.Header.Set("Cookie", "junk="+strconv.Itoa(i))
		_, err := c.ValidateSession(context.Background(), junk)
		require.ErrorIs(t, err, ErrNoCredentials)
		_, err = c.ValidateSession(context.Background(), cookieRequest("forged-"+strconv.Itoa(i)))
		require.ErrorIs(t, err, ErrInvalidCredentials)
		require.LessOrEqual(t, c.size(), max)
	}
	before := inner.calls.Load()
	for i := range users {
		_, err := c.ValidateSession(context.Background(), cookieRequest("user-"+strconv.Itoa(i)))
		require.NoError(t, err)
	}
	assert.Equal(t, before, inner.calls.Load(), "sessions of signed-in users were pushed out")

	// A new session still finds room, at the expense of a forged one.
	inner.set("late", userUntil("late", time.Time{}))
	_, err := c.ValidateSession(context.Background(), cookieRequest("late"))
	require.NoError(t, err)
	_, err = c.ValidateSession(context.Background(), cookieRequest("late"))
	require.NoError(t, err)
	assert.Equal(t, before+1, inner.calls.Load())
}

func TestCacheRevalidationBypassesAndRefreshes(t *testing.T) {
	inner := newCountingValidator()
	inner.set("s", userUntil("alice", time.Time{}))
	c, _ := newTestCache(t, inner, SessionCacheOptions{})
	_, err := c.ValidateSession(context.Background(), cookieRequest("s"))
	require.NoError(t, err)

	// The session is revoked; a revalidation must see it at once.
	inner.set("s", nil)
	_, err = c.ValidateSession(withRevalidation(context.Background()), cookieRequest("s"))
	require.ErrorIs(t, err, ErrInvalidCredentials)
	assert.EqualValues(t, 2, inner.calls.Load())

	// And new handshakes with the revoked cookie are refused from then on.
	_, err = c.ValidateSession(context.Background(), cookieRequest("s"))
	require.ErrorIs(t, err, ErrInvalidCredentials)
	assert.EqualValues(t, 2, inner.calls.Load())
}

func TestCacheCallerDeadline(t *testing.T) {
	release := make(chan struct{})
	inner := newCountingValidator()
	inner.set("s", func() (*Identity, error) {
		<-release
		return &Identity{Subject: "u", Name: "alice"}, nil
	})
	c, _ := newTestCache(t, inner, SessionCacheOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.ValidateSession(ctx, cookieRequest("s"))
	require.ErrorIs(t, err, ErrUnavailable, "a caller stops waiting when its context ends")

	// The shared call was not cancelled with it: its answer is kept.
	close(release)
	require.Eventually(t, func() bool {
		hit, id, _ := c.get(mustKey(t, c, cookieRequest("s")))
		return hit && id != nil && id.Name == "alice"
	}, 10*time.Second, 10*time.Millisecond)
	assert.EqualValues(t, 1, inner.calls.Load())
}

func mustKey(t *testing.T, c *sessionCache, r *http.Request) cacheKey {
	t.Helper()
	k, ok := c.key(r)
	require.True(t, ok)
	return k
}

// TestCacheSingleflight makes 1,000 simultaneous handshakes with one cookie
// and counts the calls that reach the validator behind the cache.
func TestCacheSingleflight(t *testing.T) {
	const n = 1000
	for _, tc := range []struct {
		name   string
		answer func() (*Identity, error)
		status int
	}{
		{"valid session", userUntil("alice", time.Time{}), http.StatusSwitchingProtocols},
		{"auth service down (never cached, still shared)", func() (*Identity, error) {
			return nil, fmt.Errorf("%w: 502", ErrUnavailable)
		}, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var arrived atomic.Int64
			inner := newCountingValidator()
			inner.set("s", func() (*Identity, error) {
				// Hold the call until every handshake has asked.
				deadline := time.Now().Add(20 * time.Second)
				for arrived.Load() < n && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(100 * time.Millisecond)
				return tc.answer()
			})
			cache, err := NewSessionCache(inner, SessionCacheOptions{})
			require.NoError(t, err)
			counted := SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*Identity, error) {
				arrived.Add(1)
				return cache.ValidateSession(ctx, r)
			})
			// All n handshakes come from one address and are being
			// decided at once: each holds one attempt of its budget.
			h := newHarness(t, Options{Sessions: counted, ValidatorTimeout: 30 * time.Second, Throttle: ThrottleOptions{MaxFailures: n}})

			statuses := make(chan int, n)
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
					defer cancel()
					c, resp, err := websocket.Dial(ctx, h.wsURL(""), &websocket.DialOptions{HTTPHeader: hdr("Cookie", testCookie+"=s")})
					if c != nil {
						c.CloseNow()
					}
					switch {
					case resp != nil:
						statuses <- resp.StatusCode
					default:
						t.Errorf("dial: %v", err)
					}
				})
			}
			wg.Wait()
			close(statuses)
			got := map[int]int{}
			for s := range statuses {
				got[s]++
			}
			assert.Equal(t, map[int]int{tc.status: n}, got)
			assert.EqualValues(t, n, arrived.Load())
			assert.EqualValues(t, 1, inner.calls.Load(), "upstream calls for %d simultaneous handshakes", n)
			t.Logf("%d simultaneous handshakes with one cookie: %d upstream call(s)", n, inner.calls.Load())
		})
	}
}

func TestNewSessionCacheRefusesBadOptions(t *testing.T) {
	inner := newCountingValidator()
	for name, tc := range map[string]struct {
		v    SessionValidator
		opts SessionCacheOptions
	}{
		"nil validator":         {nil, SessionCacheOptions{}},
		"negative TTL":          {inner, SessionCacheOptions{TTL: -1}},
		"negative negative TTL": {inner, SessionCacheOptions{NegativeTTL: -1}},
		"negative size":         {inner, SessionCacheOptions{MaxEntries: -1}},
	} {
		t.Run(name, func(t *testing.T) {
			v, err := NewSessionCache(tc.v, tc.opts)
			require.Error(t, err)
			assert.Nil(t, v)
		})
	}
}

func TestCacheHitIsCheap(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes escape analysis and so the allocation count; CI runs this test without it")
	}
	m, r := cachedSessionMiddleware(t)
	allocs := testing.AllocsPerRun(1000, func() {
		id, err := m.Authenticate(r)
		if err != nil || id.Name != "alice" {
			t.Fatalf("Authenticate = %v, %v", id, err)
		}
	})
	assert.LessOrEqual(t, allocs, 4.0, "allocations per Authenticate on a cache hit")
	t.Logf("Authenticate on a cache hit: %.0f allocation(s)", allocs)
}

// TestCacheKeysBetterAuthByItsSession: in front of the Better Auth
// validator, the cache key is the session cookie and the bearer token, so
// that a user whose other cookies change still hits the cache.
func TestCacheKeysBetterAuthByItsSession(t *testing.T) {
	f := newFakeBetterAuth(t)
	c, _ := newTestCache(t, newBetterAuthFor(t, f, BetterAuthOptions{}), SessionCacheOptions{})
	ask := func(header http.Header) {
		t.Helper()
		_, err := c.ValidateSession(context.Background(), requestWith(header))
		require.NoError(t, err)
	}
	for _, cookie := range []string{
		"theme=dark; " + baCookie + "=good-alice.sig",
		"theme=light; " + baCookie + "=good-alice.sig; _ga=GA1.2.3",
		baCookie + "=good-alice.sig",
		"a=1;" + baCookie + `="good-alice.sig"` + " ;b=2",
	} {
		ask(hdr("Cookie", cookie))
	}
	assert.EqualValues(t, 1, f.calls.Load(), "upstream calls for one session under changing other cookies")

	ask(hdr("Cookie", baCookie+"=good-bob.sig"))
	assert.EqualValues(t, 2, f.calls.Load(), "another session is another key")
	ask(hdr("Cookie", baCookie+"=good-alice.sig", "Authorization", "Bearer good-alice.sig"))
	assert.EqualValues(t, 3, f.calls.Load(), "a bearer token is part of the key")
	ask(hdr("Cookie", "__Secure-"+baCookie+"=good-alice.sig"))
	assert.EqualValues(t, 4, f.calls.Load(), "the cookie's name is part of the key")
}

// TestBetterAuthCredentialIsWhatItForwards: the credential the cache keys
// a request by holds everything the Better Auth validator forwards, and
// the session cookies it forwards are those net/http finds.
func TestBetterAuthCredentialIsWhatItForwards(t *testing.T) {
	f := newFakeBetterAuth(t)
	ba := newBetterAuthFor(t, f, BetterAuthOptions{})
	reader := ba.(credentialReader)
	headers := []http.Header{
		hdr("Cookie", baCookie+"=good-a.sig"),
		hdr("Cookie", baCookie+`="good-a.sig"`),
		hdr("Cookie", baCookie+" = good-a.sig"),
		hdr("Cookie", "\t"+baCookie+"=good-a.sig;"),
		hdr("Cookie", baCookie+"=good-a.sig; "+baCookie+"=good-b.sig"),
		hdr("Cookie", baCookie+"=good-b.sig; "+baCookie+"=good-a.sig"),
		hdr("Cookie", baCookie+"=good-a.sig", "Cookie", "__Secure-"+baCookie+"=good-b.sig"),
		hdr("Cookie", "__Secure-"+baCookie+"=good-a.sig"),
		hdr("Cookie", baCookie+`=good-a.sig\`),
		hdr("Cookie", baCookie+`=good-a"x.sig`),
		hdr("Cookie", baCookie+"="),
		hdr("Cookie", "x"+baCookie+"=good-a.sig"),
		hdr("Cookie", baCookie+"=good-a.sig;theme=dark"),
		hdr("Cookie", baCookie+"=good-a.sig", "Authorization", "Bearer good-a.sig"),
		hdr("Cookie", baCookie+"=good-a.sig", "Authorization", "Bearer good-a.sig", "Authorization", "Bearer good-b.sig"),
		hdr("Authorization", "Bearer good-a.sig"),
		hdr("Authorization", "bearer good-a.sig"),
		hdr("Authorization", "Basic Z29vZC1hOnNpZw=="),
	}
	type seenUpstream struct {
		called         bool
		cookie, bearer string
	}
	keys := make([]string, len(headers))
	upstream := make([]seenUpstream, len(headers))
	for i, h := range headers {
		r := requestWith(h)
		k, ok := reader.appendCredential(nil, r)
		if ok {
			keys[i] = string(k)
		}
		before := f.calls.Load()
		_, _ = ba.ValidateSession(context.Background(), r)
		if f.calls.Load() > before {
			up := f.lastRequest()
			upstream[i] = seenUpstream{true, up.Header.Get("Cookie"), up.Header.Get("Authorization")}
		}
		assert.Equal(t, ok, upstream[i].called, "%v: a credential, and a call upstream, go together", h)

		var want []string
		for _, name := range []string{baCookie, "__Secure-" + baCookie} {
			for _, c := range r.CookiesNamed(name) {
				if c.Value != "" {
					want = append(want, c.Name+"="+c.Value)
				}
			}
		}
		var got []string
		if upstream[i].cookie != "" {
			got = strings.Split(upstream[i].cookie, "; ")
		}
		assert.ElementsMatch(t, want, got, "%v: forwarded session cookies", h)
	}
	for i := range headers {
		for j := range headers {
			if keys[i] != "" && keys[i] == keys[j] {
				assert.Equal(t, upstream[i], upstream[j], "%v and %v share a key but not what is forwarded", headers[i], headers[j])
			}
		}
	}
}

func TestCacheKeyOfBetterAuthAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes escape analysis and so the allocation count")
	}
	f := newFakeBetterAuth(t)
	c, _ := newTestCache(t, newBetterAuthFor(t, f, BetterAuthOptions{}), SessionCacheOptions{})
	r := requestWith(hdr("Cookie", "theme=dark; "+baCookie+"=good-alice.sig; _ga=1", "Authorization", "Bearer good-alice.sig"))
	mustKey(t, c, r)
	assert.Zero(t, testing.AllocsPerRun(100, func() { mustKey(t, c, r) }))
}
