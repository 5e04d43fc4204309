package wsauth_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/mosaicstack/wsauth"
)

// fakeGetSession stands in for a Better Auth server: it knows one session.
func fakeGetSession() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("better-auth.session_token")
		if err != nil || c.Value != "known-token.signature" {
			fmt.Fprint(w, "null") // Better Auth's answer for "no session"
			return
		}
		fmt.Fprintf(w, `{"session":{"id":"s1","userId":"u42","expiresAt":%q},"user":{"id":"u42","name":"alice"}}`,
			time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
}

// A Better Auth validator asks get-session about the request's session
// cookie; a cache in front of it keeps reconnect storms off the auth service.
func ExampleNewBetterAuth() {
	auth := fakeGetSession()
	defer auth.Close()

	betterAuth, err := wsauth.NewBetterAuth(wsauth.BetterAuthOptions{BaseURL: auth.URL})
	if err != nil {
		log.Fatal(err)
	}
	sessions, err := wsauth.NewSessionCache(betterAuth, wsauth.SessionCacheOptions{})
	if err != nil {
		log.Fatal(err)
	}
	m, err := wsauth.New(wsauth.Options{Sessions: sessions})
	if err != nil {
		log.Fatal(err)
	}
	for _, cookie := range []string{"known-token.signature", "forged.signature", ""} {
		r := httptest.NewRequest(http.MethodGet, "/chat", nil)
		if cookie != "" {
			r.Header.Set("Cookie", "better-auth.session_token="+cookie)
		}
		id, err := m.Authenticate(r)
		if err != nil {
			fmt.Println(wsauth.StatusCode(err), err)
			continue
		}
		fmt.Println(id.Kind, id.Subject, id.Name, id.SessionID)
	}
	// Output:
	// user u42 alice s1
	// 401 wsauth: invalid credentials
	// 401 wsauth: no credentials
}

// Concurrent and repeated checks of one credential reach the wrapped
// validator once per TTL.
func ExampleNewSessionCache() {
	var calls atomic.Int64
	slow := wsauth.SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*wsauth.Identity, error) {
		calls.Add(1)
		return &wsauth.Identity{Subject: "u42", Name: "alice", Expires: time.Now().Add(time.Hour)}, nil
	})
	sessions, err := wsauth.NewSessionCache(slow, wsauth.SessionCacheOptions{TTL: time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	for range 100 {
		r := httptest.NewRequest(http.MethodGet, "/chat", nil)
		r.Header.Set("Cookie", "session=s3cr3t")
		if _, err := sessions.ValidateSession(context.Background(), r); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("validator calls:", calls.Load())
	// Output: validator calls: 1
}

// Accept ties the socket to the session: when the session ends, the
// library closes the socket with 4401 and the context ends.
func ExampleMiddleware_Accept() {
	sessions := wsauth.SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*wsauth.Identity, error) {
		// A session that ends in a moment.
		return &wsauth.Identity{Subject: "u42", Name: "alice", SessionID: "s1", Expires: time.Now().Add(300 * time.Millisecond)}, nil
	})
	m, err := wsauth.New(wsauth.Options{Sessions: sessions})
	if err != nil {
		log.Fatal(err)
	}
	ended := make(chan error, 1)
	chat := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ctx, err := m.Accept(w, r, nil)
		if err != nil {
			return // Accept has answered the request
		}
		defer c.CloseNow()
		for {
			if _, _, err := c.Read(ctx); err != nil {
				break
			}
		}
		<-ctx.Done()
		ended <- context.Cause(ctx)
	})
	srv := httptest.NewServer(m.Handler(chat))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.CloseNow()
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		fmt.Println("client:", int(ce.Code), ce.Reason)
	}
	fmt.Println("server:", <-ended)
	// Output:
	// client: 4401 session expired
	// server: wsauth: session ended: session expired
}
