//go:build integration

package betterauthtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mosaicstack/wsauth/internal/betterauthtest"
)

type getSessionBody struct {
	Session struct {
		ID        string `json:"id"`
		Token     string `json:"token"`
		UserID    string `json:"userId"`
		ExpiresAt string `json:"expiresAt"`
	} `json:"session"`
	User struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Email string `json:"email"`
	} `json:"user"`
}

func decodeSession(t *testing.T, body []byte) *getSessionBody {
	t.Helper()
	if string(body) == "null" {
		return nil
	}
	var out getSessionBody
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("get-session body %q: %v", body, err)
	}
	return &out
}

func wantNull(t *testing.T, body []byte, why string) {
	t.Helper()
	if string(body) != "null" {
		t.Fatalf("%s: get-session = %s, want null", why, body)
	}
}

// forge changes one character of the token part of a Session.Cookie.
func forge(cookie string) string {
	name, value, _ := strings.Cut(cookie, "=")
	b := []byte(value)
	if b[0] == 'a' {
		b[0] = 'b'
	} else {
		b[0] = 'a'
	}
	return name + "=" + string(b)
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	srv := betterauthtest.Start(t, betterauthtest.Options{})

	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("URL = %q", srv.URL)
	}
	if srv.CookieName != "better-auth.session_token" {
		t.Fatalf("CookieName = %q", srv.CookieName)
	}

	// No cookie: 200 null, and no Set-Cookie.
	resp, body := srv.GetSessionResponse(t, "")
	if resp.StatusCode != http.StatusOK || string(body) != "null" {
		t.Fatalf("no cookie: %d %s, want 200 null", resp.StatusCode, body)
	}
	if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("no cookie: Set-Cookie %q", sc)
	}

	sess := srv.SignUp(t, "alice@example.com", "correct-horse-battery", "Alice Example")

	// Cookie format: better-auth.session_token=<url-encoded TOKEN.SIG>,
	// SIG = padded std base64 of HMAC-SHA256(secret, TOKEN).
	name, value, _ := strings.Cut(sess.Cookie, "=")
	if name != "better-auth.session_token" {
		t.Fatalf("cookie name %q", name)
	}
	if want := srv.SignedCookieValue(sess.Token); value != want {
		t.Fatalf("cookie value %q, want %q", value, want)
	}
	raw, err := url.QueryUnescape(value)
	if err != nil {
		t.Fatal(err)
	}
	tok, sig, ok := strings.Cut(raw, ".")
	if !ok || tok != sess.Token || len(sig) != 44 || !strings.HasSuffix(sig, "=") {
		t.Fatalf("decoded cookie %q: token %q sig %q", raw, tok, sig)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9]{32}$`).MatchString(sess.Token) {
		t.Logf("note: token %q is not 32 alphanumerics", sess.Token)
	}
	t.Logf("observed cookie: %s", sess.Cookie)
	for _, c := range sess.SetCookies {
		t.Logf("sign-up Set-Cookie: %s (MaxAge=%d HttpOnly=%v Secure=%v SameSite=%v Path=%q)",
			c.Name, c.MaxAge, c.HttpOnly, c.Secure, c.SameSite, c.Path)
	}

	// Valid cookie: the session, no Set-Cookie with disableRefresh.
	resp, body = srv.GetSessionResponse(t, sess.Cookie)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("get-session: %d %s", resp.StatusCode, body)
	}
	if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("valid session: unexpected Set-Cookie %q", sc)
	}
	got := decodeSession(t, body)
	if got == nil {
		t.Fatal("valid session: get-session = null")
	}
	if got.User.Name != "Alice Example" || got.User.Email != "alice@example.com" ||
		got.User.ID != sess.UserID || got.Session.UserID != sess.UserID ||
		got.Session.Token != sess.Token || got.Session.ID == "" || got.Session.ExpiresAt == "" {
		t.Fatalf("get-session = %s; session %+v", body, sess)
	}

	// The unencoded form of the value works too, and extra cookies are fine.
	if decodeSession(t, srv.GetSession(t, "other=1; "+name+"="+raw+"; x=y")) == nil {
		t.Fatal("unencoded cookie value rejected")
	}

	// Forged token (one character changed, signature kept): null, no Set-Cookie.
	resp, body = srv.GetSessionResponse(t, forge(sess.Cookie))
	wantNull(t, body, "forged token")
	if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("forged token: Set-Cookie %q", sc)
	}
	// A correctly signed token the server never issued: null.
	wantNull(t, srv.GetSession(t, name+"="+srv.SignedCookieValue(strings.Repeat("A", 32))), "unissued token")
	// Right token signed with another secret: null.
	wantNull(t, srv.GetSession(t, name+"="+betterauthtest.SignCookieValue("another-secret-another-secret-xx", sess.Token)), "wrong secret")
	// Another cookie name (prefix): null.
	wantNull(t, srv.GetSession(t, "other-prefix.session_token="+value), "wrong cookie name")

	// A second session for the same user, via sign-in.
	sess2 := srv.SignIn(t, "alice@example.com", "correct-horse-battery")
	if sess2.Token == sess.Token || sess2.UserID != sess.UserID {
		t.Fatalf("sign-in session %+v vs sign-up %+v", sess2, sess)
	}

	// Sign-out revokes only that session.
	srv.SignOut(t, sess)
	resp, body = srv.GetSessionResponse(t, sess.Cookie)
	wantNull(t, body, "after sign-out")
	// A signed cookie whose session is gone makes get-session expire it.
	var expired []string
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 {
			expired = append(expired, c.Name)
		}
	}
	t.Logf("after sign-out get-session Set-Cookie: %q", resp.Header.Values("Set-Cookie"))
	if !contains(expired, "better-auth.session_token") {
		t.Errorf("after sign-out: get-session did not expire the session cookie (Set-Cookie %q)", resp.Header.Values("Set-Cookie"))
	}
	if decodeSession(t, srv.GetSession(t, sess2.Cookie)) == nil {
		t.Fatal("signing out one session revoked the other")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestOriginRequired documents Better Auth's CSRF check on cookie-carrying
// POSTs, which SignOut satisfies by sending Origin.
func TestOriginRequired(t *testing.T) {
	t.Parallel()
	srv := betterauthtest.Start(t, betterauthtest.Options{TrustedOrigins: []string{"http://gateway.test:8080"}})
	sess := srv.SignUp(t, "bob@example.com", "correct-horse-battery", "Bob")

	post := func(origin string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/auth/sign-out", strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Cookie", sess.Cookie)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct {
			Code string `json:"code"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Code
	}
	if st, code := post(""); st != http.StatusForbidden || code != "MISSING_OR_NULL_ORIGIN" {
		t.Fatalf("no Origin: %d %s", st, code)
	}
	if st, code := post("http://evil.example"); st != http.StatusForbidden || code != "INVALID_ORIGIN" {
		t.Fatalf("bad Origin: %d %s", st, code)
	}
	if decodeSession(t, srv.GetSession(t, sess.Cookie)) == nil {
		t.Fatal("rejected sign-out revoked the session")
	}
	if st, _ := post("http://gateway.test:8080"); st != http.StatusOK {
		t.Fatalf("trusted extra Origin: %d", st)
	}
	wantNull(t, srv.GetSession(t, sess.Cookie), "after sign-out from trusted origin")
}

func TestShortLivedSession(t *testing.T) {
	t.Parallel()
	srv := betterauthtest.Start(t, betterauthtest.Options{SessionExpiresIn: 2 * time.Second})
	sess := srv.SignUp(t, "carol@example.com", "correct-horse-battery", "Carol")
	for _, c := range sess.SetCookies {
		if c.Name == srv.CookieName && c.MaxAge != 2 {
			t.Errorf("cookie Max-Age = %d, want 2", c.MaxAge)
		}
	}
	if decodeSession(t, srv.GetSession(t, sess.Cookie)) == nil {
		t.Fatal("fresh short-lived session: null")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body := srv.GetSessionResponse(t, sess.Cookie)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("get-session: %d %s", resp.StatusCode, body)
		}
		if string(body) == "null" {
			// An expired session's cookie is expired by get-session too.
			found := false
			for _, c := range resp.Cookies() {
				found = found || (c.Name == srv.CookieName && c.MaxAge < 0)
			}
			if !found {
				t.Errorf("expired session: no expiring Set-Cookie in %q", resp.Header.Values("Set-Cookie"))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("session still valid 10s after a 2s expiry")
		}
		time.Sleep(250 * time.Millisecond)
	}
	// Once deleted, the same cookie stays null.
	wantNull(t, srv.GetSession(t, sess.Cookie), "expired session, second look")
}

func TestCookiePrefixAndSecret(t *testing.T) {
	t.Parallel()
	secret := "a-different-secret-for-this-test-0123456789"
	srv := betterauthtest.Start(t, betterauthtest.Options{CookiePrefix: "mosaic", Secret: secret})
	if srv.CookieName != "mosaic.session_token" || srv.Secret != secret {
		t.Fatalf("CookieName %q Secret %q", srv.CookieName, srv.Secret)
	}
	sess := srv.SignUp(t, "dave@example.com", "correct-horse-battery", "Dave")
	if !strings.HasPrefix(sess.Cookie, "mosaic.session_token=") {
		t.Fatalf("cookie %q", sess.Cookie)
	}
	if want := "mosaic.session_token=" + betterauthtest.SignCookieValue(secret, sess.Token); sess.Cookie != want {
		t.Fatalf("cookie %q, want %q", sess.Cookie, want)
	}
	wantNull(t, srv.GetSession(t, "better-auth.session_token="+betterauthtest.SignCookieValue(secret, sess.Token)), "default name under custom prefix")
	if decodeSession(t, srv.GetSession(t, sess.Cookie)) == nil {
		t.Fatal("custom prefix session: null")
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	srv := betterauthtest.Start(t, betterauthtest.Options{})
	srv.Stop()
	srv.Stop() // idempotent
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/auth/get-session", nil)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("server answered %d after Stop", resp.StatusCode)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Logf("after Stop: %v (not ECONNREFUSED)", err)
	}
}

// TestParallelLoad checks that rate limiting is off: many concurrent
// get-session calls all succeed.
func TestParallelLoad(t *testing.T) {
	t.Parallel()
	srv := betterauthtest.Start(t, betterauthtest.Options{})
	sess := srv.SignUp(t, "erin@example.com", "correct-horse-battery", "Erin")
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				// The helpers call t.Fatalf, which only the test goroutine
				// may do; use a plain client here.
				req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/auth/get-session?disableRefresh=true", nil)
				req.Header.Set("Cookie", sess.Cookie)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) == "null" {
					errs <- resp.Status + " " + string(body)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// Sign-in repeatedly too (Better Auth limits sign-in hardest when on).
	for i := 0; i < 10; i++ {
		srv.SignIn(t, "erin@example.com", "correct-horse-battery")
	}
}
