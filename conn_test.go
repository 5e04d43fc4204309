package wsauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
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

// liveHarness serves a chat handler that accepts with Middleware.Accept and
// reads until the connection ends, reporting each connection's context.
type liveHarness struct {
	m     *Middleware
	srv   *httptest.Server
	ctxs  chan context.Context
	opts  *websocket.AcceptOptions
	ended sync.WaitGroup
}

func newLiveHarness(t *testing.T, opts Options, accept *websocket.AcceptOptions) *liveHarness {
	t.Helper()
	if opts.ValidatorTimeout == 0 {
		opts.ValidatorTimeout = 5 * time.Second
	}
	if opts.PluginKeys == nil {
		keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey})
		require.NoError(t, err)
		opts.PluginKeys = keys
	}
	m, err := New(opts)
	require.NoError(t, err)
	h := &liveHarness{m: m, ctxs: make(chan context.Context, 100), opts: accept}
	h.srv = httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ctx, err := m.Accept(w, r, h.opts)
		if err != nil {
			return
		}
		h.ended.Add(1)
		defer h.ended.Done()
		defer c.CloseNow()
		h.ctxs <- ctx
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	})))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *liveHarness) url() string { return "ws" + strings.TrimPrefix(h.srv.URL, "http") + "/chat" }

// dial opens a connection and returns it with the server side's context.
func (h *liveHarness) dial(t *testing.T, header http.Header) (*websocket.Conn, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, h.url(), &websocket.DialOptions{HTTPHeader: header})
	if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake refused: %d", resp.StatusCode)
	}
	require.NoError(t, err)
	t.Cleanup(func() { c.CloseNow() })
	select {
	case sctx := <-h.ctxs:
		return c, sctx
	case <-ctx.Done():
		t.Fatal("the handler did not report its context")
		return nil, nil
	}
}

// waitClosed reads until the connection ends and returns the close error.
func waitClosed(t *testing.T, c *websocket.Conn, within time.Duration) websocket.CloseError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		require.NoError(t, ctx.Err(), "the connection was not closed in time")
		var ce websocket.CloseError
		require.ErrorAs(t, err, &ce, "closed without a close frame: %v", err)
		return ce
	}
}

// stillOpen checks that neither side has seen the connection end.
func stillOpen(t *testing.T, c *websocket.Conn, serverCtx context.Context) {
	t.Helper()
	require.NoError(t, serverCtx.Err(), "the server side ended")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.Write(ctx, websocket.MessageText, []byte("still there?")))
}

func TestCloseReasonsFitAFrame(t *testing.T) {
	for _, r := range []*endReason{endExpired, endRevoked, endKeyRemoved} {
		assert.LessOrEqual(t, len(r.text), 123, r.text)
		assert.ErrorIs(t, r.err, ErrSessionEnded)
		assert.Regexp(t, "^wsauth: ", r.err.Error())
	}
}

func TestAcceptClosesTheSocketWhenTheSessionEnds(t *testing.T) {
	cases := []struct {
		name       string
		interval   time.Duration
		answer     func(start time.Time) func() (*Identity, error) // at the handshake
		later      func(start time.Time) func() (*Identity, error) // from then on; nil: unchanged
		wantReason string
		notBefore  time.Duration
	}{
		{
			name:     "session expires",
			interval: time.Hour,
			answer: func(start time.Time) func() (*Identity, error) {
				return userUntil("alice", start.Add(time.Second))
			},
			wantReason: "session expired",
			notBefore:  time.Second,
		},
		{
			name:     "session revoked (sign-out)",
			interval: 200 * time.Millisecond,
			answer: func(start time.Time) func() (*Identity, error) {
				return userUntil("alice", start.Add(time.Hour))
			},
			later:      func(time.Time) func() (*Identity, error) { return nil },
			wantReason: "session revoked",
		},
		{
			name:     "auth service down until the session expires",
			interval: 100 * time.Millisecond,
			answer: func(start time.Time) func() (*Identity, error) {
				return userUntil("alice", start.Add(1500*time.Millisecond))
			},
			later: func(time.Time) func() (*Identity, error) {
				return func() (*Identity, error) { return nil, fmt.Errorf("%w: 502", ErrUnavailable) }
			},
			wantReason: "session expired",
			notBefore:  1500 * time.Millisecond,
		},
		{
			name:     "credential now stands for another session",
			interval: 200 * time.Millisecond,
			answer: func(start time.Time) func() (*Identity, error) {
				return userUntil("alice", start.Add(time.Hour))
			},
			later: func(start time.Time) func() (*Identity, error) {
				return func() (*Identity, error) {
					return &Identity{Subject: "id-alice", Name: "alice", SessionID: "another", Expires: start.Add(time.Hour)}, nil
				}
			},
			wantReason: "session revoked",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newCountingValidator()
			start := time.Now()
			v.set("s", tc.answer(start))
			h := newLiveHarness(t, Options{Sessions: v, RevalidateInterval: tc.interval}, nil)
			c, sctx := h.dial(t, hdr("Cookie", testCookie+"=s"))
			if tc.later != nil {
				v.set("s", tc.later(start))
			}
			ce := waitClosed(t, c, 20*time.Second)
			assert.Equal(t, StatusSessionEnded, ce.Code)
			assert.Equal(t, tc.wantReason, ce.Reason)
			assert.GreaterOrEqual(t, time.Since(start), tc.notBefore, "closed before the session ended")

			select {
			case <-sctx.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the connection's context did not end")
			}
			assert.ErrorIs(t, context.Cause(sctx), ErrSessionEnded)
			assert.Contains(t, context.Cause(sctx).Error(), tc.wantReason)
			require.Eventually(t, func() bool { return h.m.live.size() == 0 }, 10*time.Second, 10*time.Millisecond)
		})
	}
}

// size returns the number of tracked groups, for tests.
func (s *liveSet) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) + len(s.plugins)
}

func TestAcceptKeepsSocketsOpenWhileTheAuthServiceIsDown(t *testing.T) {
	v := newCountingValidator()
	v.set("s", userUntil("alice", time.Now().Add(time.Hour)))
	h := newLiveHarness(t, Options{Sessions: v, RevalidateInterval: 100 * time.Millisecond}, nil)
	c, sctx := h.dial(t, hdr("Cookie", testCookie+"=s"))

	v.set("s", func() (*Identity, error) { return nil, fmt.Errorf("%w: connection refused", ErrUnavailable) })
	before := v.calls.Load()
	require.Eventually(t, func() bool { return v.calls.Load() >= before+3 }, 20*time.Second, 10*time.Millisecond,
		"the session is checked again while the service is down")
	v.set("s", func() (*Identity, error) { panic("validator bug") })
	require.Eventually(t, func() bool { return v.calls.Load() >= before+5 }, 20*time.Second, 10*time.Millisecond)
	stillOpen(t, c, sctx)

	// The service answers again: the session is fine, then revoked.
	v.set("s", userUntil("alice", time.Now().Add(time.Hour)))
	before = v.calls.Load()
	require.Eventually(t, func() bool { return v.calls.Load() >= before+2 }, 20*time.Second, 10*time.Millisecond)
	assert.NoError(t, sctx.Err())
	v.set("s", nil)
	ce := waitClosed(t, c, 20*time.Second)
	assert.Equal(t, StatusSessionEnded, ce.Code)
	assert.ErrorIs(t, context.Cause(waitDone(t, sctx)), ErrSessionEnded)
}

func TestAcceptFollowsAnExtendedSession(t *testing.T) {
	v := newCountingValidator()
	start := time.Now()
	v.set("s", userUntil("alice", start.Add(time.Second)))
	h := newLiveHarness(t, Options{Sessions: v, RevalidateInterval: 200 * time.Millisecond}, nil)
	_, sctx := h.dial(t, hdr("Cookie", testCookie+"=s"))
	// Better Auth extends a session that is in use; the next check sees it.
	v.set("s", userUntil("alice", start.Add(time.Hour)))
	time.Sleep(2 * time.Second)
	assert.NoError(t, sctx.Err(), "closed at the old expiry")
}

func TestAcceptContextEndsWithTheConnection(t *testing.T) {
	v := newCountingValidator()
	v.set("s", userUntil("alice", time.Now().Add(time.Hour)))
	h := newLiveHarness(t, Options{Sessions: v}, nil)
	c, sctx := h.dial(t, hdr("Cookie", testCookie+"=s"))
	c2, sctx2 := h.dial(t, hdr("Cookie", testCookie+"=s"))
	assert.Equal(t, 1, h.m.live.size(), "two connections of one session share one group")

	require.NoError(t, c.Close(websocket.StatusNormalClosure, "bye"))
	select {
	case <-sctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context did not end with the connection")
	}
	assert.Equal(t, context.Canceled, context.Cause(sctx))
	assert.NoError(t, sctx2.Err(), "the other connection of the session is unaffected")
	id, ok := FromContext(sctx2)
	require.True(t, ok, "the context carries the identity")
	assert.Equal(t, "alice", id.Name)

	c2.CloseNow()
	require.Eventually(t, func() bool { return h.m.live.size() == 0 }, 10*time.Second, 10*time.Millisecond)
}

func TestAcceptPluginKeyReload(t *testing.T) {
	const (
		keyA  = "reload-key-telegram-0123456789abcdefghij"
		keyB  = "reload-key-discord-0123456789abcdefghijk"
		keyB2 = "reload-key-discord-replaced-0123456789ab"
	)
	file := filepath.Join(t.TempDir(), "keys")
	write := func(s string) { require.NoError(t, os.WriteFile(file, []byte(s), 0o600)) }
	write("telegram=" + keyA + "\ndiscord=" + keyB + "\n")
	setEnv(t, "", "", file)
	keys, err := PluginKeysFromEnv()
	require.NoError(t, err)
	h := newLiveHarness(t, Options{PluginKeys: keys}, nil)

	telegram, tctx := h.dial(t, hdr(PluginTokenHeader, keyA))
	discord, dctx := h.dial(t, hdr(PluginTokenHeader, keyB))

	t.Run("a reload that fails keeps the keys and the sockets", func(t *testing.T) {
		write("telegram=short\n")
		require.Error(t, keys.Reload())
		time.Sleep(100 * time.Millisecond)
		assert.NoError(t, tctx.Err())
		assert.NoError(t, dctx.Err())
	})

	t.Run("a replaced key closes its sockets, a kept key does not", func(t *testing.T) {
		write("telegram=" + keyA + "\ndiscord=" + keyB2 + "\n")
		require.NoError(t, keys.Reload())
		ce := waitClosed(t, discord, 20*time.Second)
		assert.Equal(t, StatusSessionEnded, ce.Code)
		assert.Equal(t, "plugin key removed", ce.Reason)
		assert.ErrorIs(t, context.Cause(waitDone(t, dctx)), ErrSessionEnded)
		stillOpen(t, telegram, tctx)
	})

	t.Run("a removed key closes its sockets", func(t *testing.T) {
		discord2, d2ctx := h.dial(t, hdr(PluginTokenHeader, keyB2))
		write("discord=" + keyB2 + "\n")
		require.NoError(t, keys.Reload())
		ce := waitClosed(t, telegram, 20*time.Second)
		assert.Equal(t, StatusSessionEnded, ce.Code)
		assert.Equal(t, "plugin key removed", ce.Reason)
		stillOpen(t, discord2, d2ctx)
		discord2.CloseNow()
		require.Eventually(t, func() bool { return h.m.live.size() == 0 }, 10*time.Second, 10*time.Millisecond)
		keys.watchMu.Lock()
		defer keys.watchMu.Unlock()
		assert.Empty(t, keys.watchers, "no connection left to watch for")
	})
}

func waitDone(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context did not end")
	}
	return ctx
}

func TestAcceptOrigin(t *testing.T) {
	v := newCountingValidator()
	v.set("s", userUntil("alice", time.Now().Add(time.Hour)))
	h := newLiveHarness(t, Options{Sessions: v, AllowedOrigins: []string{"app.example.com"}}, nil)
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"plugin with a foreign Origin (plugins are exempt)", hdr(PluginTokenHeader, testKey, "Origin", "https://evil.example")},
		{"user from an allowed origin", hdr("Cookie", testCookie+"=s", "Origin", "https://app.example.com")},
		{"user from the same host", hdr("Cookie", testCookie+"=s", "Origin", h.srv.URL)},
		{"user without Origin", hdr("Cookie", testCookie+"=s")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := h.dial(t, tc.header)
			c.CloseNow()
		})
	}
}

func TestAcceptDoesNotModifyOptions(t *testing.T) {
	opts := &websocket.AcceptOptions{Subprotocols: []string{"chat"}}
	v := newCountingValidator()
	v.set("s", userUntil("alice", time.Now().Add(time.Hour)))
	h := newLiveHarness(t, Options{Sessions: v, AllowedOrigins: []string{"app.example.com"}}, opts)
	c, _ := h.dial(t, hdr(PluginTokenHeader, testKey))
	c.CloseNow()
	c, _ = h.dial(t, hdr("Cookie", testCookie+"=s"))
	c.CloseNow()
	assert.Equal(t, &websocket.AcceptOptions{Subprotocols: []string{"chat"}}, opts)
}

func TestAcceptRefusesWithoutIdentity(t *testing.T) {
	keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey})
	require.NoError(t, err)
	m, err := New(Options{PluginKeys: keys})
	require.NoError(t, err)
	var acceptErr error
	// A handler that is not behind m.Handler.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _, acceptErr = m.Accept(w, r, nil)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.ErrorIs(t, acceptErr, ErrNoCredentials)

	// An identity whose session has already ended is refused too.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/chat", nil)
	req = req.WithContext(NewContext(req.Context(), &Identity{Kind: KindUser, Subject: "u", Expires: time.Now().Add(-time.Second)}))
	_, _, err = m.Accept(rec, req, nil)
	assert.ErrorIs(t, err, ErrInvalidCredentials)
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
}

func TestNewRefusesNegativeRevalidateInterval(t *testing.T) {
	_, err := New(Options{Sessions: newCountingValidator(), RevalidateInterval: -time.Second})
	assert.Error(t, err)
}

// TestRevalidationIsPeriodic checks the real timer: a few sessions, checked
// once per interval each, however many sockets they have.
func TestRevalidationIsPeriodic(t *testing.T) {
	const sessions, perSession, interval = 4, 10, 200 * time.Millisecond
	v := newCountingValidator()
	for i := range sessions {
		v.set("s"+strconv.Itoa(i), userUntil("u"+strconv.Itoa(i), time.Now().Add(time.Hour)))
	}
	h := newLiveHarness(t, Options{Sessions: v, RevalidateInterval: interval}, nil)
	for i := range sessions * perSession {
		h.dial(t, hdr("Cookie", testCookie+"=s"+strconv.Itoa(i%sessions)))
	}
	before, start := v.calls.Load(), time.Now()
	time.Sleep(8 * interval)
	calls, elapsed := v.calls.Load()-before, time.Since(start)
	maxCalls := int64(sessions) * (int64(elapsed/interval) + 1)
	assert.GreaterOrEqual(t, calls, int64(sessions), "every session is checked")
	assert.LessOrEqual(t, calls, maxCalls, "at most one check per session and interval")
	t.Logf("%d sockets over %d sessions, %v: %d checks (at most %d allowed)", sessions*perSession, sessions, elapsed.Round(time.Millisecond), calls, maxCalls)
}

// TestAcceptUserWithoutValidator covers identities that the middleware did
// not make (another authentication in front of Accept): without a session
// validator there is nothing to revalidate, and only the expiry ends them.
func TestAcceptUserWithoutValidator(t *testing.T) {
	keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey})
	require.NoError(t, err)
	m, err := New(Options{PluginKeys: keys, RevalidateInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	ctxs := make(chan context.Context, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := &Identity{Kind: KindUser, Subject: "u", Name: "sso", SessionID: "s", Expires: time.Now().Add(time.Second)}
		c, ctx, err := m.Accept(w, r.WithContext(NewContext(r.Context(), id)), nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctxs <- ctx
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	require.NoError(t, err)
	defer c.CloseNow()
	sctx := <-ctxs
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, sctx.Err(), "closed before its expiry")
	ce := waitClosed(t, c, 20*time.Second)
	assert.Equal(t, StatusSessionEnded, ce.Code)
	assert.Equal(t, "session expired", ce.Reason)
}

// TestRevalidationLogIsRedacted: a revalidation that cannot decide is
// logged without the query of a URL that the validator's error quotes.
func TestRevalidationLogIsRedacted(t *testing.T) {
	const secret = "revalidation-token-that-must-not-leak"
	v := newCountingValidator()
	v.set("s", userUntil("alice", time.Now().Add(time.Hour)))
	logger, own := newTeeLogger()
	h := newLiveHarness(t, Options{Sessions: v, RevalidateInterval: 50 * time.Millisecond, Logger: logger}, nil)
	_, sctx := h.dial(t, hdr("Cookie", testCookie+"=s"))
	v.set("s", func() (*Identity, error) {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable,
			&url.Error{Op: "Get", URL: "https://auth.internal/get-session?token=" + secret, Err: errors.New("connection refused")})
	})
	require.Eventually(t, func() bool {
		return strings.Contains(own.String(), "revalidation could not decide")
	}, 20*time.Second, 10*time.Millisecond)
	assert.Contains(t, own.String(), "auth.internal/get-session")
	assert.NotContains(t, own.String(), secret)
	assert.NoError(t, sctx.Err())
}

// TestAcceptSeesAReloadDuringRegistration: a Reload that removes a plugin's
// key just after its connection, on its way to being registered, has read
// the keys still closes that connection.
func TestAcceptSeesAReloadDuringRegistration(t *testing.T) {
	const (
		key   = "reload-race-key-telegram-0123456789abcd"
		other = "reload-race-key-discord-0123456789abcde"
	)
	file := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(file, []byte("telegram="+key+"\n"), 0o600))
	setEnv(t, "", "", file)
	keys, err := PluginKeysFromEnv()
	require.NoError(t, err)
	h := newLiveHarness(t, Options{PluginKeys: keys}, nil)

	reloaded := make(chan error, 1)
	h.m.live.mu.Lock()
	h.m.live.keysRead = func() {
		h.m.live.keysRead = nil
		before := keys.set.Load()
		if err := os.WriteFile(file, []byte("discord="+other+"\n"), 0o600); err != nil {
			reloaded <- err
			return
		}
		go func() { reloaded <- keys.Reload() }()
		// Wait until the new keys are in force; the Reload may still
		// be on its way to its watchers.
		for deadline := time.Now().Add(10 * time.Second); keys.set.Load() == before && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	h.m.live.mu.Unlock()

	c, _ := h.dial(t, hdr(PluginTokenHeader, key))
	ce := waitClosed(t, c, 5*time.Second)
	assert.Equal(t, StatusSessionEnded, ce.Code)
	assert.Equal(t, "plugin key removed", ce.Reason)
	require.NoError(t, <-reloaded)
	require.Eventually(t, func() bool { return h.m.live.size() == 0 }, 10*time.Second, 10*time.Millisecond)
	keys.watchMu.Lock()
	defer keys.watchMu.Unlock()
	assert.Empty(t, keys.watchers, "no connection left to watch for")
}

// TestAcceptKeyRemovedBeforeTheUpgrade: a plugin whose key is removed
// between the handshake's check and the upgrade gets a socket that is
// closed at once with 4401.
func TestAcceptKeyRemovedBeforeTheUpgrade(t *testing.T) {
	const (
		key   = "removed-early-key-telegram-0123456789ab"
		other = "removed-early-key-discord-0123456789abc"
	)
	file := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(file, []byte("telegram="+key+"\n"), 0o600))
	setEnv(t, "", "", file)
	keys, err := PluginKeysFromEnv()
	require.NoError(t, err)
	m, err := New(Options{PluginKeys: keys})
	require.NoError(t, err)
	ctxs := make(chan context.Context, 1)
	srv := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The key is rotated away after the middleware let the
		// request in, before the handler upgrades.
		if err := os.WriteFile(file, []byte("discord="+other+"\n"), 0o600); err != nil || keys.Reload() != nil {
			http.Error(w, "reload failed", http.StatusInternalServerError)
			return
		}
		c, ctx, err := m.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctxs <- ctx
		_, _, _ = c.Read(ctx)
	})))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{HTTPHeader: hdr(PluginTokenHeader, key)})
	require.NoError(t, err)
	defer c.CloseNow()
	ce := waitClosed(t, c, 10*time.Second)
	assert.Equal(t, StatusSessionEnded, ce.Code)
	assert.Equal(t, "plugin key removed", ce.Reason)
	assert.ErrorIs(t, context.Cause(waitDone(t, <-ctxs)), ErrSessionEnded)
	assert.Zero(t, m.live.size())
	keys.watchMu.Lock()
	defer keys.watchMu.Unlock()
	assert.Empty(t, keys.watchers, "nothing left to watch for")
}

// TestRevalidationConcurrencyIsBounded: however many timer firings make
// sessions due while the auth service hangs, no more than maxParallelChecks
// revalidations run at once.
func TestRevalidationConcurrencyIsBounded(t *testing.T) {
	const sessions = 20
	var inFlight, most, started atomic.Int64
	release := make(chan struct{})
	v := SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*Identity, error) {
		c, err := r.Cookie(testCookie)
		if err != nil {
			return nil, ErrNoCredentials
		}
		id := &Identity{Subject: "id-" + c.Value, Name: c.Value, SessionID: "sid-" + c.Value, Expires: time.Now().Add(time.Hour)}
		if !isRevalidation(ctx) {
			return id, nil
		}
		started.Add(1)
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return id, nil
	})
	h := newLiveHarness(t, Options{Sessions: v, RevalidateInterval: 100 * time.Millisecond, ValidatorTimeout: time.Minute}, nil)
	defer close(release)
	// Sessions opened 30 ms apart come due 30 ms apart: a timer firing
	// each.
	for i := range sessions {
		h.dial(t, hdr("Cookie", testCookie+"=s"+strconv.Itoa(i)))
		time.Sleep(30 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	assert.EqualValues(t, maxParallelChecks, started.Load(), "checks started while the auth service hangs")
	assert.LessOrEqual(t, most.Load(), int64(maxParallelChecks), "revalidations at once")
}

// TestAcceptKeepsOnlyTheSessionCredential: in front of the Better Auth
// validator, a session's connections keep its session cookie for their
// revalidations, not the rest of the Cookie header.
func TestAcceptKeepsOnlyTheSessionCredential(t *testing.T) {
	f := newFakeBetterAuth(t)
	ba := newBetterAuthFor(t, f, BetterAuthOptions{})
	cached, err := NewSessionCache(ba, SessionCacheOptions{})
	require.NoError(t, err)
	for name, v := range map[string]SessionValidator{"Better Auth": ba, "Better Auth behind the cache": cached} {
		t.Run(name, func(t *testing.T) {
			h := newLiveHarness(t, Options{Sessions: v, RevalidateInterval: time.Hour}, nil)
			cookie := "theme=dark; tracking=" + strings.Repeat("x", 4000) + "; " + baCookie + "=good-alice.sig"
			c, _ := h.dial(t, hdr("Cookie", cookie))
			defer c.CloseNow()
			h.m.live.mu.Lock()
			defer h.m.live.mu.Unlock()
			require.Len(t, h.m.live.queue, 1)
			kept := h.m.live.queue[0].cred
			assert.Equal(t, []credentialHeader{{name: "Cookie", values: []string{baCookie + "=good-alice.sig"}}}, kept.headers)
			assert.Less(t, kept.size(), 100)
		})
	}
}

// TestAcceptRefusesACredentialTooLargeToKeep: a connection whose credential
// is larger than a connection may keep is refused before the upgrade.
func TestAcceptRefusesACredentialTooLargeToKeep(t *testing.T) {
	v := newCountingValidator()
	v.set("s", userUntil("alice", time.Now().Add(time.Hour)))
	logger, own := newTeeLogger()
	h := newLiveHarness(t, Options{Sessions: v, Logger: logger}, nil)
	dial := func(padding int) (*websocket.Conn, *http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cookie := testCookie + "=s; padding=" + strings.Repeat("x", padding)
		return websocket.Dial(ctx, h.url(), &websocket.DialOptions{HTTPHeader: hdr("Cookie", cookie)})
	}

	c, resp, err := dial(maxCredentialBytes)
	require.Error(t, err, "a connection that keeps more than %d bytes opened", maxCredentialBytes)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Nil(t, c)
	assert.Zero(t, h.m.live.size())
	assert.Contains(t, own.String(), "wsauth: refused a connection whose credential is too large to keep")

	c, _, err = dial(maxCredentialBytes - 100)
	require.NoError(t, err)
	c.CloseNow()
}

// TestAcceptRefusesAForeignOrigin: Accept applies the Origin rule itself to
// a user identity that reached it without the middleware's check (another
// authentication in front), and refuses a foreign page before upgrading.
func TestAcceptRefusesAForeignOrigin(t *testing.T) {
	m, err := New(Options{PluginKeys: mustKeys(t), AllowedOrigins: []string{"app.example.com"}})
	require.NoError(t, err)
	acceptErrs := make(chan error, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := &Identity{Kind: KindUser, Subject: "u", Name: "sso", Expires: time.Now().Add(time.Hour)}
		c, _, err := m.Accept(w, r.WithContext(NewContext(r.Context(), id)), nil)
		acceptErrs <- err
		if err == nil {
			c.CloseNow()
		}
	}))
	defer srv.Close()
	for origin, want := range map[string]int{
		"https://evil.example":    http.StatusForbidden,
		"https://app.example.com": http.StatusSwitchingProtocols,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, _ := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{HTTPHeader: hdr("Origin", origin)})
		cancel()
		require.NotNil(t, resp, origin)
		assert.Equal(t, want, resp.StatusCode, origin)
		if c != nil {
			c.CloseNow()
		}
		if want == http.StatusForbidden {
			assert.ErrorIs(t, <-acceptErrs, ErrForbiddenOrigin)
		} else {
			assert.NoError(t, <-acceptErrs)
		}
	}
}

// TestRevalidationFindsTheSessionExpired: a revalidation whose answer says
// the session has already expired closes its connections as expired.
func TestRevalidationFindsTheSessionExpired(t *testing.T) {
	v := newCountingValidator()
	v.set("s", userUntil("alice", time.Now().Add(time.Hour)))
	h := newLiveHarness(t, Options{Sessions: v, RevalidateInterval: 100 * time.Millisecond}, nil)
	c, sctx := h.dial(t, hdr("Cookie", testCookie+"=s"))
	v.set("s", userUntil("alice", time.Now().Add(-time.Minute)))
	ce := waitClosed(t, c, 20*time.Second)
	assert.Equal(t, StatusSessionEnded, ce.Code)
	assert.Equal(t, "session expired", ce.Reason)
	assert.ErrorIs(t, context.Cause(waitDone(t, sctx)), ErrSessionEnded)
	require.Eventually(t, func() bool { return h.m.live.size() == 0 }, 10*time.Second, 10*time.Millisecond)
}
