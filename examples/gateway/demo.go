package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mosaicstack/wsauth"
)

// demoCookie names the demo store's session cookie.
const demoCookie = "wsauth_demo_session"

// demoSessionTTL is how long a demo session lasts.
const demoSessionTTL = 12 * time.Hour

// maxDemoSessions bounds the store, so that a flood of POST /login cannot
// grow it without end.
const maxDemoSessions = 10000

// demoSessions is an in-memory session store for trying the gateway
// without an auth service. It implements wsauth.SessionValidator.
type demoSessions struct {
	mu       sync.Mutex
	sessions map[string]demoSession // by token
}

type demoSession struct {
	id      string
	name    string
	expires time.Time
}

func newDemoSessions() *demoSessions {
	return &demoSessions{sessions: make(map[string]demoSession)}
}

// ValidateSession looks the request's session cookie up in the store.
func (s *demoSessions) ValidateSession(_ context.Context, r *http.Request) (*wsauth.Identity, error) {
	c, err := r.Cookie(demoCookie)
	if err != nil || c.Value == "" {
		return nil, wsauth.ErrNoCredentials
	}
	s.mu.Lock()
	sess, ok := s.sessions[c.Value]
	s.mu.Unlock()
	if !ok || !time.Now().Before(sess.expires) {
		return nil, wsauth.ErrInvalidCredentials
	}
	return &wsauth.Identity{
		Kind:      wsauth.KindUser,
		Subject:   "demo:" + sess.name,
		Name:      sess.name,
		SessionID: sess.id,
		Expires:   sess.expires,
	}, nil
}

// purgeExpired drops sessions that have ended. s.mu must be held.
func (s *demoSessions) purgeExpired(now time.Time) {
	for token, sess := range s.sessions {
		if !now.Before(sess.expires) {
			delete(s.sessions, token)
		}
	}
}

// login starts a session for the form field "name" and sets its cookie.
func (s *demoSessions) login() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimSpace(r.PostFormValue("name"))
		if !validDisplayName(name) {
			http.Error(w, "name: 1 to 32 printable characters", http.StatusBadRequest)
			return
		}
		token, id := randomToken(), randomToken()[:12]
		expires := time.Now().Add(demoSessionTTL)
		s.mu.Lock()
		if len(s.sessions) >= maxDemoSessions {
			s.purgeExpired(time.Now())
		}
		full := len(s.sessions) >= maxDemoSessions
		if !full {
			s.sessions[token] = demoSession{id: id, name: name, expires: expires}
		}
		s.mu.Unlock()
		if full {
			http.Error(w, "too many sessions, try again later", http.StatusServiceUnavailable)
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: demoCookie, Value: token, Path: "/", Expires: expires,
			HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
		})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
}

// logout ends the request's session and clears its cookie.
func (s *demoSessions) logout() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie(demoCookie); err == nil {
			s.mu.Lock()
			delete(s.sessions, c.Value)
			s.mu.Unlock()
		}
		http.SetCookie(w, &http.Cookie{Name: demoCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
}

// whoami tells the chat page who is signed in: 200 with the name, 401 when
// nobody is, 503 with Retry-After when the auth service cannot tell. It asks
// the middleware that guards /chat, so a request here is decided as a
// handshake would be: throttled, checked for its Origin, logged and
// counted. (A refusal can therefore also be 403 or 429.)
func whoami(auth *wsauth.Middleware) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		id, err := auth.Authenticate(r)
		if err != nil {
			wsauth.DefaultErrorHandler(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(sender{Kind: id.Kind, Name: id.Name})
	})
}

func validDisplayName(name string) bool {
	if name == "" || utf8.RuneCountInString(name) > 32 || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// signInElsewhere answers /login and /logout when sessions come from Better
// Auth: the gateway only checks sessions; an app signs users in and out at
// the auth server, whose session cookie the browser then sends here too.
func signInElsewhere(authURL string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintf(w, "This gateway accepts Better Auth sessions from %s.\n"+
			"Sign in or out there (POST /api/auth/sign-in/email, /api/auth/sign-out),\n"+
			"then open / again: the browser sends the session cookie to this gateway too.\n", authURL)
	})
}
