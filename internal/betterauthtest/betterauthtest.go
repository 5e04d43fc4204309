// Package betterauthtest starts a real Better Auth server (the npm package
// better-auth, run by Node) for integration tests, and talks to it the way a
// browser would: sign up, sign in, sign out, get-session.
//
// The server lives in the server/ directory next to this file. Start installs
// its node_modules with `npm ci` the first time it is needed (serialised by a
// lock file, so parallel test binaries do not collide), starts `node
// server.mjs` on an ephemeral 127.0.0.1 port, and stops it when the test ends.
// Every server keeps its users and sessions in memory, so each Start is a clean
// slate.
//
// Facts observed against better-auth 1.7.25 (pinned in server/package.json):
//
//   - The session cookie is "<prefix>.session_token" (prefix "better-auth"
//     unless Options.CookiePrefix is set; no "__Secure-" prefix because the
//     server is plain http). Its value is URL-encoded "TOKEN.SIG", where TOKEN
//     is 32 alphanumeric characters and SIG is the standard, padded base64
//     (44 characters) of HMAC-SHA256(secret, TOKEN). The server also accepts
//     the value without URL encoding.
//   - GET /api/auth/get-session?disableRefresh=true answers 200 with the body
//     "null" when there is no valid session (no cookie, bad signature,
//     revoked, expired), and 200 with {"session":{...},"user":{...}} otherwise.
//     With a valid session it sends no Set-Cookie; with a correctly signed
//     cookie whose session is gone (signed out or expired) it sends Set-Cookie
//     headers that expire the session cookies (Max-Age=0).
//   - POSTs that carry a Cookie header (sign-out) are rejected with 403
//     MISSING_OR_NULL_ORIGIN without an Origin header, and 403 INVALID_ORIGIN
//     with an untrusted one. This package always sends Origin: Server.URL.
//
// The package uses only the standard library. Processes are managed with
// Unix process groups and flock, so it builds on Unix-like systems only.
package betterauthtest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultSecret is the BETTER_AUTH_SECRET used when Options.Secret is empty.
// It is a fixed test value (longer than the 32 characters Better Auth asks
// for) and must never be used outside tests.
const DefaultSecret = "wsauth-betterauthtest-secret-not-for-production-0123456789"

// DefaultCookiePrefix is Better Auth's cookie prefix when Options.CookiePrefix
// is empty.
const DefaultCookiePrefix = "better-auth"

// StartTimeout bounds how long Start waits for the server's READY line
// (not counting a first `npm ci`, which has its own, longer bound).
const StartTimeout = 60 * time.Second

// npmCITimeout bounds the one-time `npm ci`.
const npmCITimeout = 10 * time.Minute

// requestTimeout bounds each HTTP request the helpers make.
const requestTimeout = 15 * time.Second

// Options configure a server started by Start. The zero value is usable.
type Options struct {
	// Secret is BETTER_AUTH_SECRET, the key of the cookie signatures.
	// Empty means DefaultSecret.
	Secret string

	// SessionExpiresIn is the lifetime of new sessions (Better Auth's
	// session.expiresIn). It is rounded up to whole seconds. Zero means
	// Better Auth's default of 7 days. A few seconds lets a test watch a
	// session expire.
	SessionExpiresIn time.Duration

	// CookiePrefix is Better Auth's advanced.cookiePrefix. Empty means
	// DefaultCookiePrefix.
	CookiePrefix string

	// TrustedOrigins are extra origins (e.g. "http://127.0.0.1:8080") that
	// Better Auth accepts in the Origin header of cookie-carrying POSTs. The
	// server's own URL is always trusted.
	TrustedOrigins []string
}

// Server is a running Better Auth server. Create it with Start.
type Server struct {
	// URL is the server's base URL, "http://127.0.0.1:<port>" without a
	// trailing slash. Better Auth's endpoints are under URL + "/api/auth".
	URL string

	// Secret is the BETTER_AUTH_SECRET the server signs cookies with.
	Secret string

	// CookieName is the name of the session cookie,
	// CookiePrefix + ".session_token".
	CookieName string

	cmd     *exec.Cmd
	stdin   io.WriteCloser // closing it makes server.mjs exit (watchdog)
	exited  chan struct{}  // closed once cmd.Wait has returned
	logs    *logBuffer
	client  *http.Client
	stopped sync.Once
}

// Session is a signed-in session, as a browser would hold it.
type Session struct {
	// Cookie is the value of a Cookie request header that carries this
	// session: "<CookieName>=<value>", the value exactly as the server sent
	// it in Set-Cookie (URL-encoded "TOKEN.SIG").
	Cookie string

	// Token is the raw session token (TOKEN, the part before the signature),
	// as stored by Better Auth and returned in get-session's session.token.
	Token string

	// UserID is the id of the signed-in user.
	UserID string

	// Email and Name are the user's, as the server reported them.
	Email string
	Name  string

	// SetCookies are all the cookies the server set in the response.
	SetCookies []*http.Cookie
}

// Start starts a Better Auth server configured by opts and registers a
// tb.Cleanup that stops it. It installs the server's node_modules first if
// they are missing or stale. Any failure (no node or npm, install failure,
// no READY line within StartTimeout) is fatal to the test: it never skips.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()

	dir, err := serverDir()
	if err != nil {
		tb.Fatalf("betterauthtest: %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		tb.Fatalf("betterauthtest: node is required to run the Better Auth server: %v", err)
	}
	if err := ensureNodeModules(dir); err != nil {
		tb.Fatalf("betterauthtest: %v", err)
	}

	secret := opts.Secret
	if secret == "" {
		secret = DefaultSecret
	}
	prefix := opts.CookiePrefix
	if prefix == "" {
		prefix = DefaultCookiePrefix
	}

	env := childEnv()
	env = append(env,
		"BETTER_AUTH_SECRET="+secret,
		"EXIT_ON_STDIN_EOF=1",
		"NO_COLOR=1",
	)
	if opts.SessionExpiresIn > 0 {
		secs := int64((opts.SessionExpiresIn + time.Second - 1) / time.Second)
		env = append(env, "SESSION_EXPIRES_IN="+strconv.FormatInt(secs, 10))
	} else if opts.SessionExpiresIn < 0 {
		tb.Fatalf("betterauthtest: negative Options.SessionExpiresIn %v", opts.SessionExpiresIn)
	}
	if opts.CookiePrefix != "" {
		env = append(env, "COOKIE_PREFIX="+opts.CookiePrefix)
	}
	if len(opts.TrustedOrigins) > 0 {
		env = append(env, "TRUSTED_ORIGINS="+strings.Join(opts.TrustedOrigins, ","))
	}

	logs := &logBuffer{}
	ready := make(chan string, 1)
	cmd := exec.Command(node, "server.mjs")
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = &readyWriter{logs: logs, ready: ready}
	cmd.Stderr = logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatalf("betterauthtest: stdin pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("betterauthtest: starting node server.mjs in %s: %v", dir, err)
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	s := &Server{
		Secret:     secret,
		CookieName: prefix + ".session_token",
		cmd:        cmd,
		stdin:      stdin,
		exited:     make(chan struct{}),
		logs:       logs,
		client:     &http.Client{Transport: transport, Timeout: requestTimeout},
	}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			tb.Logf("betterauthtest: Better Auth server output:\n%s", s.Logs())
		}
	})

	timer := time.NewTimer(StartTimeout)
	defer timer.Stop()
	select {
	case u := <-ready:
		s.URL = u
	case <-s.exited:
		tb.Fatalf("betterauthtest: Better Auth server exited before it was ready (%v)", cmd.ProcessState)
	case <-timer.C:
		tb.Fatalf("betterauthtest: Better Auth server not ready after %v", StartTimeout)
	}
	return s
}

// Stop kills the server (and its process group) now and waits for it to
// exit, so that a test can observe the auth service being down: afterwards
// connections to URL are refused. It is safe to call more than once, and
// Start's cleanup calls it too.
func (s *Server) Stop() {
	s.stopped.Do(func() {
		_ = s.stdin.Close()
		if p := s.cmd.Process; p != nil {
			// Negative pid: the whole process group started by Setpgid.
			if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
				_ = p.Kill()
			}
		}
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
		}
		s.client.CloseIdleConnections()
	})
}

// Logs returns everything the server has written so far (the READY line and
// Better Auth's log messages), for diagnostics.
func (s *Server) Logs() string { return s.logs.String() }

// SignUp creates a user with POST /api/auth/sign-up/email and returns the
// session Better Auth signs them into. The password must be at least 8
// characters (Better Auth's default minimum). Failure is fatal.
func (s *Server) SignUp(tb testing.TB, email, password, name string) *Session {
	tb.Helper()
	return s.authenticate(tb, "/api/auth/sign-up/email", map[string]string{
		"email": email, "password": password, "name": name,
	})
}

// SignIn opens a new session for an existing user with
// POST /api/auth/sign-in/email. Failure (including wrong credentials) is
// fatal.
func (s *Server) SignIn(tb testing.TB, email, password string) *Session {
	tb.Helper()
	return s.authenticate(tb, "/api/auth/sign-in/email", map[string]string{
		"email": email, "password": password,
	})
}

// SignOut revokes sess with POST /api/auth/sign-out (sending Origin: URL,
// which Better Auth requires). Afterwards get-session answers null for its
// cookie. Failure is fatal.
func (s *Server) SignOut(tb testing.TB, sess *Session) {
	tb.Helper()
	resp, body := s.do(tb, http.MethodPost, "/api/auth/sign-out", sess.Cookie, []byte("{}"))
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("betterauthtest: sign-out: status %d: %s", resp.StatusCode, body)
	}
}

// GetSession calls GET /api/auth/get-session?disableRefresh=true with
// cookieHeader as the Cookie header (none if empty) and returns the raw
// response body: "null" without a valid session, otherwise JSON
// {"session":{...},"user":{...}}. A status other than 200 is fatal.
func (s *Server) GetSession(tb testing.TB, cookieHeader string) []byte {
	tb.Helper()
	resp, body := s.GetSessionResponse(tb, cookieHeader)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("betterauthtest: get-session: status %d: %s", resp.StatusCode, body)
	}
	return body
}

// GetSessionResponse is GetSession without the status check: it returns the
// response (body already read and closed; headers such as Set-Cookie intact)
// and the body. A transport error is fatal.
func (s *Server) GetSessionResponse(tb testing.TB, cookieHeader string) (*http.Response, []byte) {
	tb.Helper()
	return s.do(tb, http.MethodGet, "/api/auth/get-session?disableRefresh=true", cookieHeader, nil)
}

// SignedCookieValue returns the session cookie value Better Auth would set
// for token under this server's secret: URL-encoded "TOKEN.SIG" with SIG the
// padded standard base64 of HMAC-SHA256(Secret, TOKEN). Tests can use it to
// build cookies by hand (e.g. for a token the server never issued).
func (s *Server) SignedCookieValue(token string) string {
	return SignCookieValue(s.Secret, token)
}

// SignCookieValue returns URL-encoded "TOKEN.SIG", SIG being the padded
// standard base64 of HMAC-SHA256(secret, token): the format of Better Auth's
// signed session cookie value.
func SignCookieValue(secret, token string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(token))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return url.QueryEscape(token + "." + sig)
}

// authenticate posts a sign-up or sign-in body and turns the answer into a
// Session.
func (s *Server) authenticate(tb testing.TB, path string, payload map[string]string) *Session {
	tb.Helper()
	reqBody, err := json.Marshal(payload)
	if err != nil {
		tb.Fatalf("betterauthtest: %v", err)
	}
	resp, body := s.do(tb, http.MethodPost, path, "", reqBody)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("betterauthtest: POST %s: status %d: %s", path, resp.StatusCode, body)
	}
	var out struct {
		Token string `json:"token"`
		User  struct {
			ID    string `json:"id"`
			Email string `json:"email"`
			Name  string `json:"name"`
		} `json:"user"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		tb.Fatalf("betterauthtest: POST %s: decoding %q: %v", path, body, err)
	}
	sess := &Session{
		Token:      out.Token,
		UserID:     out.User.ID,
		Email:      out.User.Email,
		Name:       out.User.Name,
		SetCookies: resp.Cookies(),
	}
	for _, c := range sess.SetCookies {
		if c.Name == s.CookieName {
			sess.Cookie = c.Name + "=" + c.Value
		}
	}
	if sess.Cookie == "" {
		tb.Fatalf("betterauthtest: POST %s: no %s cookie in Set-Cookie %q", path, s.CookieName, resp.Header.Values("Set-Cookie"))
	}
	if sess.Token == "" || sess.UserID == "" {
		tb.Fatalf("betterauthtest: POST %s: no token or user id in %s", path, body)
	}
	return sess
}

// do sends one request to the server, with Origin: URL (Better Auth's CSRF
// check wants it on cookie-carrying POSTs) and the given Cookie header, and
// returns the response with its body read.
func (s *Server) do(tb testing.TB, method, path, cookieHeader string, body []byte) (*http.Response, []byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		tb.Fatalf("betterauthtest: %v", err)
	}
	req.Header.Set("Origin", s.URL)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cookieHeader != "" {
		req.Header.Set("Cookie", cookieHeader)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		tb.Fatalf("betterauthtest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("betterauthtest: %s %s: reading body: %v", method, path, err)
	}
	return resp, respBody
}

// serverDir finds the server/ directory next to this source file. If the
// binary was built with -trimpath, it falls back to searching upwards from
// the working directory for the module root.
func serverDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		dir := filepath.Join(filepath.Dir(file), "server")
		if _, err := os.Stat(filepath.Join(dir, "server.mjs")); err == nil {
			return dir, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		dir := filepath.Join(d, "internal", "betterauthtest", "server")
		if _, err := os.Stat(filepath.Join(dir, "server.mjs")); err == nil {
			return dir, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("cannot find internal/betterauthtest/server/server.mjs (from the source path or the working directory)")
		}
	}
}

// installMu serialises installs within one process; a flock on a file in
// the temporary directory serialises them across processes (go test runs the
// test binaries of different packages in parallel).
var installMu sync.Mutex

// stampName is written into node_modules after a successful `npm ci`; it holds
// the SHA-256 of the package-lock.json that was installed. `npm ci` deletes
// node_modules first, so a half-finished install never has a stamp.
const stampName = ".betterauthtest-installed"

// ensureNodeModules runs `npm ci` in dir unless node_modules holds a complete
// install of the current package-lock.json.
func ensureNodeModules(dir string) error {
	installMu.Lock()
	defer installMu.Unlock()

	sum := sha256.Sum256([]byte(dir))
	lockPath := filepath.Join(os.TempDir(), "wsauth-betterauthtest-"+hex.EncodeToString(sum[:8])+".lock")
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return fmt.Errorf("npm ci lock: %w", err)
	}
	defer lock.Close() // releases the flock too
	fd := int(lock.Fd())

	// Readers share the lock, so they never see an install in progress.
	if err := syscall.Flock(fd, syscall.LOCK_SH); err != nil {
		return fmt.Errorf("npm ci lock %s: %w", lockPath, err)
	}
	want, err := lockHash(dir)
	if err != nil {
		return err
	}
	if installed(dir, want) {
		return nil
	}
	if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("npm ci lock %s: %w", lockPath, err)
	}
	if installed(dir, want) { // another process installed it meanwhile
		return nil
	}

	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("npm is required to install the Better Auth server: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), npmCITimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "node_modules", stampName), []byte(want+"\n"), 0o644); err != nil {
		return fmt.Errorf("after npm ci in %s: %w", dir, err)
	}
	return nil
}

// lockHash is the hex SHA-256 of dir/package-lock.json.
func lockHash(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return "", fmt.Errorf("betterauthtest: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// installed reports whether dir/node_modules is a finished install of the
// package-lock.json whose hash is want.
func installed(dir, want string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", stampName))
	return err == nil && strings.TrimSpace(string(b)) == want
}

// childEnv is this process's environment without the variables that would
// change how server.mjs or Better Auth behave (NODE_ENV=test or TEST, for
// instance, would turn Better Auth's origin check off by default).
func childEnv() []string {
	drop := map[string]bool{
		"NODE_ENV": true, "TEST": true, "PORT": true, "NODE_OPTIONS": true,
		"SESSION_EXPIRES_IN": true, "COOKIE_PREFIX": true, "TRUSTED_ORIGINS": true,
		"EXIT_ON_STDIN_EOF": true, "NO_COLOR": true, "FORCE_COLOR": true,
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if drop[k] || strings.HasPrefix(k, "BETTER_AUTH_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// logBuffer collects the server's output; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	const max = 1 << 20 // keep the log bounded
	if b.buf.Len() < max {
		b.buf.Write(p)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// readyWriter is the server's stdout: it copies everything to logs and
// reports the URL of the first "READY <url>" line on ready.
type readyWriter struct {
	logs  *logBuffer
	ready chan<- string
	line  []byte
	done  bool
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.logs.Write(p)
	if w.done {
		return len(p), nil
	}
	w.line = append(w.line, p...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimSpace(string(w.line[:i]))
		w.line = w.line[i+1:]
		if u, ok := strings.CutPrefix(line, "READY "); ok {
			w.done = true
			w.line = nil
			w.ready <- u // buffered, sent once
			return len(p), nil
		}
	}
}
