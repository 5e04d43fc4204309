package main

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"net/url"
)

//go:embed index.html
var indexHTML []byte

// pageHandler serves the chat page.
func pageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		_, _ = w.Write(indexHTML)
	})
}

// pageConfig is what the chat page needs to know besides who is signed in.
type pageConfig struct {
	// SignInURL is where users sign in when sessions come from an auth
	// service; empty means the demo store's sign-in form.
	SignInURL string `json:"signInURL,omitempty"`
}

// configHandler answers GET /config for the chat page. authURL is the
// auth service's base URL (AUTH_URL), or empty for the demo store; only an
// absolute http or https URL is passed on, so that the page never links to
// anything else.
func configHandler(authURL string) http.Handler {
	var cfg pageConfig
	if u, err := url.Parse(authURL); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		cfg.SignInURL = u.String()
	}
	body, _ := json.Marshal(cfg)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(body)
	})
}
