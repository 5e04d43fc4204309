// Command gateway is a small chat gateway that shows wsauth at work.
//
// It serves a chat page at /, and the WebSocket endpoint /chat wrapped by
// wsauth: plugins connect with an X-Plugin-Token header, browser users with
// a session cookie from POST /login (a built-in demo session store). Every
// text message an authenticated client sends is broadcast to every
// connected client as JSON:
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
//
// An unsafe key configuration stops the gateway at start-up. Without any
// key the plugin path is off.
package main

import (
	"context"
	"errors"
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

	sessions := newDemoSessions()
	var origins []string
	if v := strings.TrimSpace(getenv("ALLOWED_ORIGINS")); v != "" {
		for _, o := range strings.Split(v, ",") {
			origins = append(origins, strings.TrimSpace(o))
		}
	}
	auth, err := wsauth.New(wsauth.Options{
		PluginKeys:     keys,
		Sessions:       sessions,
		AllowedOrigins: origins,
		Logger:         logger,
	})
	if err != nil {
		return err
	}

	hub := newHub(logger)
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", pageHandler())
	mux.Handle("GET /whoami", whoami(sessions))
	csrf := http.NewCrossOriginProtection()
	mux.Handle("POST /login", csrf.Handler(sessions.login()))
	mux.Handle("POST /logout", csrf.Handler(sessions.logout()))
	mux.Handle("GET /chat", auth.Handler(hub.chat(origins)))

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
