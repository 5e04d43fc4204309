//go:build unix

package wsauth

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// raiseFileLimit raises the soft limit on open files to at least want,
// as far as the hard limit allows.
func raiseFileLimit(t *testing.T, want uint64) {
	t.Helper()
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	if lim.Cur < want {
		lim.Cur = min(want, lim.Max)
		require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim))
	}
	if lim.Cur < want {
		t.Fatalf("the test needs %d open files; the hard limit is %d", want, lim.Max)
	}
}

// TestLoad opens 5,000 handshakes at once against a real server: valid
// plugin keys, wrong keys, valid sessions and forged ones, a quarter
// each. Every valid one must open with the right identity and stay open
// until all have been answered; every invalid one must be refused; the
// counts must be exact. The throttle is on, and sized so that all 5,000,
// each holding one attempt of 127.0.0.1 while it is decided, can be in
// flight at once; the 2,500 failures then leave exactly 2,500 attempts,
// which the test uses up to show that the next request is throttled.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const perKind = 1250
	const total = 4 * perKind
	raiseFileLimit(t, 2*total+1024)

	clock := newFakeClock() // frozen: no attempt comes back during the test
	sessions := &fakeSessions{}
	m, err := New(Options{
		PluginKeys:       mustKeys(t),
		Sessions:         sessions,
		ValidatorTimeout: 30 * time.Second, // a slow machine must not turn a session into a 503
		Throttle:         ThrottleOptions{MaxFailures: total, Window: time.Hour},
		Logger:           auditLogger,
	})
	require.NoError(t, err)
	m.now = clock.Now

	release := make(chan struct{})
	var handled atomic.Int64
	chat := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled.Add(1)
		id, _ := FromContext(r.Context())
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		if wsjson.Write(r.Context(), c, seen{Kind: id.Kind, Subject: id.Subject}) != nil {
			return
		}
		<-release
		c.Close(websocket.StatusNormalClosure, "")
	})
	srv := httptest.NewServer(m.Handler(chat))
	defer srv.Close()
	url := "ws" + srv.URL[len("http"):] + "/chat"
	transport := &http.Transport{DisableKeepAlives: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}

	type want struct {
		header  http.Header
		kind    Kind   // "" for a refusal
		subject string // or the status of the refusal
		status  int
	}
	wantFor := func(i int) want {
		switch n := i / 4; i % 4 {
		case 0:
			if n%2 == 0 {
				return want{hdr(PluginTokenHeader, testKey), KindPlugin, "telegram", 101}
			}
			return want{hdr(PluginTokenHeader, testKeyDiscord), KindPlugin, "discord", 101}
		case 1:
			return want{hdr(PluginTokenHeader, fmt.Sprintf("wrong-%d-%s", n, testKey)), "", "", 401}
		case 2:
			return want{hdr("Cookie", fmt.Sprintf("%s=good-u%d", testCookie, n)), KindUser, fmt.Sprintf("id-u%d", n), 101}
		default:
			return want{hdr("Cookie", fmt.Sprintf("%s=forged-%d", testCookie, n)), "", "", 401}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var answered, done sync.WaitGroup
	var opened, refused, wrong atomic.Int64
	errs := make(chan error, total)
	start := time.Now()
	for i := range total {
		answered.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			w := wantFor(i)
			c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: w.header, HTTPClient: client})
			if err != nil {
				answered.Done()
				switch {
				case resp == nil:
					errs <- fmt.Errorf("handshake %d: %w", i, err)
				case resp.StatusCode != w.status:
					wrong.Add(1)
					errs <- fmt.Errorf("handshake %d: status %d, want %d", i, resp.StatusCode, w.status)
				default:
					refused.Add(1)
				}
				return
			}
			defer c.CloseNow()
			var s seen
			err = wsjson.Read(ctx, c, &s)
			answered.Done()
			switch {
			case err != nil:
				errs <- fmt.Errorf("handshake %d: read: %w", i, err)
			case w.status != 101 || s.Kind != w.kind || s.Subject != w.subject:
				wrong.Add(1)
				errs <- fmt.Errorf("handshake %d opened as %s %q, want %d %s %q", i, s.Kind, s.Subject, w.status, w.kind, w.subject)
			default:
				opened.Add(1)
			}
			// Hold the socket until every handshake has been answered.
			_, _, _ = c.Read(ctx)
		}()
	}
	answered.Wait()
	elapsed := time.Since(start)
	close(release)
	done.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d handshakes answered in %v (%d open at once)", total, elapsed, opened.Load())

	assert.EqualValues(t, 2*perKind, opened.Load(), "valid handshakes that opened")
	assert.EqualValues(t, 2*perKind, refused.Load(), "invalid handshakes that were refused")
	assert.Zero(t, wrong.Load())
	assert.EqualValues(t, 2*perKind, handled.Load(), "handler runs")
	assert.EqualValues(t, 2*perKind, sessions.calls.Load(), "session validator calls")

	// The throttle counted every failure and nothing else: the attempts
	// that the failures did not use are left, and after them 127.0.0.1
	// is throttled.
	for i := range total - 2*perKind {
		_, err = m.Authenticate(loopbackRequest(PluginTokenHeader, "wrong"))
		require.ErrorIs(t, err, ErrInvalidCredentials, "attempt %d of those left", i+1)
	}
	_, err = m.Authenticate(loopbackRequest(PluginTokenHeader, testKey))
	assert.ErrorIs(t, err, ErrThrottled)
}

func loopbackRequest(kv ...string) *http.Request {
	r := newRequest(kv...)
	r.RemoteAddr = "127.0.0.1:5555"
	return r
}
