package wsauth

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// auditLog collects everything the suite's middlewares log: the harness
// (newHarness) and the fuzz targets log to auditLogger unless a test asks
// for a logger of its own, and tests that read their own log tee it here
// with newTeeLogger. TestMain checks the lot for secrets once every test
// has run.
var (
	auditLog    syncBuffer
	auditLogger = slog.New(slog.NewJSONHandler(&auditLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTeeLogger returns a logger that writes JSON both to the suite's
// audit log and to a buffer of the test's own.
func newTeeLogger() (*slog.Logger, *syncBuffer) {
	own := &syncBuffer{}
	h := slog.NewJSONHandler(teeWriter{&auditLog, own}, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h), own
}

type teeWriter [2]*syncBuffer

func (w teeWriter) Write(p []byte) (int, error) {
	_, _ = w[0].Write(p)
	return w[1].Write(p)
}

// secrets lists what must never appear in a log: the test keys and the
// values of the session cookies the tests send. A leak of part of a key is
// caught by its distinctive middle; a leaked cookie by the cookie's name
// followed by '=' (a Cookie header) or by the "good-" prefix of every valid
// test session, which the fake validator strips before it names a user.
var secrets = []string{
	testKey, testKeyDiscord, "0123456789abcdef",
	testCookie + "=", "good-", fuzzSessionToken,
}

// leakedSecrets returns the secrets found in log.
func leakedSecrets(log string) []string {
	var found []string
	for _, s := range secrets {
		if strings.Contains(log, s) {
			found = append(found, s)
		}
	}
	return found
}

func TestMain(m *testing.M) {
	code := m.Run()
	fuzzing := flag.Lookup("test.fuzz").Value.String() != "" || flag.Lookup("test.fuzzworker").Value.String() == "true"
	if code == 0 {
		code = checkAuditLog(!fuzzing && flag.Lookup("test.run").Value.String() == "")
	}
	if code == 0 && !fuzzing {
		// Idle keep-alive connections of the default client are not
		// leaks of the package under test.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind after the tests:\n%v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// checkAuditLog fails the run if a secret appears in the log. After a run
// of the whole suite it also checks that the log holds what the scenarios
// must have produced, so that a harness that silently stopped logging
// cannot pass.
func checkAuditLog(wholeSuite bool) int {
	log := auditLog.String()
	if leaked := leakedSecrets(log); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the audit log contains secrets %q\n", leaked)
		return 1
	}
	if !wholeSuite {
		return 0
	}
	for _, want := range []string{
		`"msg":"wsauth: accepted"`, `"msg":"wsauth: refused"`, `"msg":"wsauth: session validator panicked"`,
		`"outcome":"invalid_credentials"`, `"outcome":"throttled"`, `"outcome":"unavailable"`,
		`"method":"plugin"`, `"method":"session"`, `"method":"loopback"`, `"key":"telegram"`,
	} {
		if !strings.Contains(log, want) {
			fmt.Fprintf(os.Stderr, "FAIL: the audit log holds no %s: is the harness still logging to it?\n", want)
			return 1
		}
	}
	return 0
}

func TestLeakedSecretsFindsLeaks(t *testing.T) {
	assert.Empty(t, leakedSecrets(`{"msg":"wsauth: accepted","key":"telegram","subject":"alice"}`))
	for _, line := range []string{
		`{"token":"` + testKey + `"}`,
		`{"partial":"` + testKeyDiscord[14:34] + `"}`,
		`{"cookie":"` + testCookie + `=forged"}`,
		`{"session":"good-alice"}`,
	} {
		assert.NotEmpty(t, leakedSecrets(line), line)
	}
}

// TestAuditEvent checks the fields of the audit events, one per decision.
func TestAuditEvent(t *testing.T) {
	logger, own := newTeeLogger()
	h := newHarness(t, Options{Logger: logger})
	got, _ := h.dial(t, "", hdr(PluginTokenHeader, testKey))
	require.NotNil(t, got)
	got, _ = h.dial(t, "", hdr("Cookie", testCookie+"=good-alice", "Origin", h.srv.URL))
	require.NotNil(t, got)
	_, resp := h.dial(t, "", hdr(PluginTokenHeader, "wrong-"+testKey, "Origin", "https://evil.example"))
	require.NotNil(t, resp)
	_, resp = h.dial(t, "", hdr("Cookie", testCookie+"=forged"))
	require.NotNil(t, resp)

	var events []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(own.String()), "\n") {
		var e map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &e), line)
		for _, k := range []string{"time", "level", "remote", "path"} {
			assert.NotEmpty(t, e[k], k)
			delete(e, k)
		}
		events = append(events, e)
	}
	assert.Equal(t, []map[string]any{
		{"msg": "wsauth: accepted", "outcome": "accepted", "method": "plugin", "origin": "", "client": "127.0.0.1",
			"kind": "plugin", "subject": "telegram", "key": "telegram"},
		{"msg": "wsauth: accepted", "outcome": "accepted", "method": "session", "origin": h.srv.URL, "client": "127.0.0.1",
			"kind": "user", "subject": "id-alice", "session": "sid-alice"},
		{"msg": "wsauth: refused", "outcome": "invalid_credentials", "method": "plugin", "origin": "https://evil.example", "client": "127.0.0.1",
			"status": float64(401), "reason": "plugin token matches no configured key"},
		{"msg": "wsauth: refused", "outcome": "invalid_credentials", "method": "session", "origin": "", "client": "127.0.0.1",
			"status": float64(401), "reason": "session invalid"},
	}, events)
}

// TestLogLevels: refusals are warnings, internal failures errors, and a
// disabled level costs nothing.
func TestLogLevels(t *testing.T) {
	logger, own := newTeeLogger()
	h := newHarness(t, Options{Logger: logger})
	_, _ = h.dial(t, "", hdr("Cookie", testCookie+"=panic"))
	out := own.String()
	assert.Contains(t, out, `"level":"ERROR","msg":"wsauth: session validator panicked"`)
	assert.Contains(t, out, `"level":"ERROR","msg":"wsauth: refused"`)
	assert.NotContains(t, out, "validator bug", "the panic value is not logged")

	quiet := slog.New(slog.NewJSONHandler(&auditLog, &slog.HandlerOptions{Level: slog.LevelError}))
	m, err := New(Options{PluginKeys: mustKeys(t), Logger: quiet})
	require.NoError(t, err)
	r := newRequest(PluginTokenHeader, testKey)
	allocs := testing.AllocsPerRun(100, func() { _, _ = m.Authenticate(r) })
	m.logger = nil
	assert.Equal(t, testing.AllocsPerRun(100, func() { _, _ = m.Authenticate(r) }), allocs,
		"a logger whose level is off costs no allocation")
}

func mustKeys(t testing.TB) *PluginKeys {
	t.Helper()
	keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey}, PluginKey{Name: "discord", Key: testKeyDiscord})
	require.NoError(t, err)
	return keys
}

// newRequest returns a request from 192.0.2.1 with the given headers.
func newRequest(kv ...string) *http.Request {
	r, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://gw.example/chat", nil)
	r.RemoteAddr = "192.0.2.1:5555"
	r.Header = hdr(kv...)
	return r
}
