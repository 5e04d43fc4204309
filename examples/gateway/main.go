// Command gateway is a small chat gateway that shows wsauth at work.
//
// It serves a chat page at /, and the WebSocket endpoint /chat wrapped by
// wsauth: plugins connect with an X-Plugin-Token header, browser users with
// a session cookie, either from POST /login (a built-in demo session store)
// or, with AUTH_URL set, from a Better Auth server. Every text message an
// authenticated client sends is broadcast to every connected client as
// JSON:
//
//	{"text":"hello","from":{"kind":"user","name":"alice"},"time":"2026-12-03T16:00:00Z"}
//
// Environment:
//
//	ADDR                 listen address (default 127.0.0.1:8080)
//	PLUGIN_API_KEY       one plugin key (32+ characters), plugin name "plugin"
//	PLUGIN_API_KEYS      named keys: telegram=KEY1,discord=KEY2
//	PLUGIN_API_KEY_FILE  a file with one key, or name=KEY lines
//	ALLOWED_ORIGINS      extra origins allowed to open a session socket
//	                     (comma-separated host patterns)
//	AUTH_URL             base URL of a Better Auth server whose sessions are
//	                     accepted (default: the demo store)
//	BETTER_AUTH_SECRET   with AUTH_URL, Better Auth's secret: forged cookies
//	                     are then refused without asking the server
//	REVALIDATE_INTERVAL  how often live sockets' sessions are checked again,
//	                     a Go duration (default 1m)
//	TRUSTED_PROXIES      reverse proxies (comma-separated addresses or CIDR
//	                     prefixes) whose X-Forwarded-For names the client
//
// GET /debug/vars serves the counters of the expvar package, among them
// wsauth_decisions (decisions by "method.outcome"), wsauth_validator_calls
// and wsauth_validator_seconds (time spent in the session validator). It
// also shows the command line and memory statistics: keep it off the public
// internet.
//
// Sockets close with code 4401 when their session expires or is signed out
// (within REVALIDATE_INTERVAL), and when their plugin key is removed from
// PLUGIN_API_KEY_FILE and the gateway is sent SIGHUP, which re-reads it.
// An unsafe key configuration stops the gateway at start-up. Without any
// key the plugin path is off.
package main

import (
	"context"
	"errors"
	"expvar"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mosaicstack/wsauth"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, logger); err != nil {
		logger.Error("gateway stopped", "err", err)
		os.Exit(1)
	}
}

// run starts the gateway and serves until ctx ends.
func run(ctx context.Context, getenv func(string) string, logger *slog.Logger) error {
	keys, err := wsauth.PluginKeysFromEnv()
	if err != nil {
		return fmt.Errorf("plugin keys: %w", err)
	}
	if keys.Len() == 0 {
		logger.Info("no plugin key configured (PLUGIN_API_KEY, PLUGIN_API_KEYS, PLUGIN_API_KEY_FILE): the plugin path is off")
	} else {
		logger.Info("plugin keys loaded", "names", keys.Names())
	}

	interval := wsauth.DefaultRevalidateInterval
	if v := strings.TrimSpace(getenv("REVALIDATE_INTERVAL")); v != "" {
		if interval, err = time.ParseDuration(v); err != nil || interval <= 0 {
			return fmt.Errorf("REVALIDATE_INTERVAL: want a positive Go duration such as 30s or 1m, got %q", v)
		}
	}
	var sessions wsauth.SessionValidator
	login, logout := http.Handler(nil), http.Handler(nil)
	if authURL := strings.TrimSpace(getenv("AUTH_URL")); authURL != "" {
		opts := wsauth.BetterAuthOptions{BaseURL: authURL}
		if secret := getenv("BETTER_AUTH_SECRET"); secret != "" {
			opts.Secrets = []string{secret}
		}
		betterAuth, err := wsauth.NewBetterAuth(opts)
		if err != nil {
			return fmt.Errorf("AUTH_URL: %w", err)
		}
		if sessions, err = wsauth.NewSessionCache(betterAuth, wsauth.SessionCacheOptions{}); err != nil {
			return err
		}
		login, logout = signInElsewhere(authURL), signInElsewhere(authURL)
		logger.Info("sessions are checked by Better Auth", "auth_url", authURL,
			"offline_signature_check", len(opts.Secrets) > 0, "revalidate_interval", interval)
	} else {
		demo := newDemoSessions()
		sessions, login, logout = demo, demo.login(), demo.logout()
		logger.Info("sessions come from the built-in demo store (set AUTH_URL to use Better Auth)", "revalidate_interval", interval)
	}
	origins := splitList(getenv("ALLOWED_ORIGINS"))
	auth, err := wsauth.New(wsauth.Options{
		PluginKeys:         keys,
		Sessions:           sessions,
		AllowedOrigins:     origins,
		RevalidateInterval: interval,
		TrustedProxies:     splitList(getenv("TRUSTED_PROXIES")),
		Logger:             logger,
		Observer:           wsauth.ObserverFunc(observe),
	})
	if err != nil {
		return err
	}
	go reloadOnHangup(ctx, keys, logger)

	hub := newHub(logger)
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", pageHandler())
	mux.Handle("GET /whoami", whoami(auth))
	mux.Handle("GET /config", configHandler(getenv("AUTH_URL")))
	csrf := http.NewCrossOriginProtection()
	mux.Handle("POST /login", csrf.Handler(login))
	mux.Handle("POST /logout", csrf.Handler(logout))
	mux.Handle("GET /chat", auth.Handler(hub.chat(auth)))
	mux.Handle("GET /debug/vars", expvar.Handler())

	addr := getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	logger.Info("gateway listening", "url", "http://"+ln.Addr().String())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hub.closeAll(shutdownCtx)
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// reloadOnHangup re-reads the plugin keys on every SIGHUP until ctx ends. A
// reload that fails keeps the old keys; sockets of removed keys close.
func reloadOnHangup(ctx context.Context, keys *wsauth.PluginKeys, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := keys.Reload(); err != nil {
				logger.Error("plugin keys not reloaded, keeping the old ones", "err", err)
				continue
			}
			logger.Info("plugin keys reloaded", "names", keys.Names())
		}
	}
}

// splitList splits a comma-separated environment variable.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Counters served at /debug/vars.
var (
	decisions        = expvar.NewMap("wsauth_decisions")
	validatorCalls   = expvar.NewInt("wsauth_validator_calls")
	validatorSeconds = expvar.NewFloat("wsauth_validator_seconds")
)

// observe counts one decision of the middleware.
func observe(e wsauth.Event) {
	decisions.Add(e.Method+"."+string(e.Outcome), 1)
	if e.ValidatorLatency > 0 {
		validatorCalls.Add(1)
		validatorSeconds.Add(e.ValidatorLatency.Seconds())
	}
}
