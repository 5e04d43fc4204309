package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mosaicstack/wsauth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWhoami: /whoami answers as the middleware decides a handshake: 200
// with the name, 401, 503 with Retry-After, and 403 for a foreign page.
func TestWhoami(t *testing.T) {
	sessions := wsauth.SessionValidatorFunc(func(_ context.Context, r *http.Request) (*wsauth.Identity, error) {
		c, err := r.Cookie("s")
		switch {
		case err != nil:
			return nil, wsauth.ErrNoCredentials
		case c.Value == "alice":
			return &wsauth.Identity{Subject: "u-alice", Name: "alice", SessionID: "s1", Expires: time.Now().Add(time.Hour)}, nil
		case c.Value == "down":
			return nil, fmt.Errorf("%w: 502", wsauth.ErrUnavailable)
		default:
			return nil, wsauth.ErrInvalidCredentials
		}
	})
	auth, err := wsauth.New(wsauth.Options{Sessions: sessions, RetryAfter: 7 * time.Second})
	require.NoError(t, err)
	h := whoami(auth)
	for _, tc := range []struct {
		name, cookie, origin string
		status               int
	}{
		{"signed in", "s=alice", "", http.StatusOK},
		{"signed in, the gateway's own page", "s=alice", "http://gateway.example", http.StatusOK},
		{"signed out", "", "", http.StatusUnauthorized},
		{"session ended", "s=revoked", "", http.StatusUnauthorized},
		{"auth service down", "s=down", "", http.StatusServiceUnavailable},
		{"a page of another site", "s=alice", "https://evil.example", http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://gateway.example/whoami", nil)
			if tc.cookie != "" {
				r.Header.Set("Cookie", tc.cookie)
			}
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			assert.Equal(t, tc.status, w.Code)
			assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
			switch tc.status {
			case http.StatusOK:
				var me sender
				require.NoError(t, json.NewDecoder(w.Body).Decode(&me))
				assert.Equal(t, sender{Kind: wsauth.KindUser, Name: "alice"}, me)
			case http.StatusServiceUnavailable:
				assert.Equal(t, "7", w.Header().Get("Retry-After"))
			}
		})
	}
}
