// Command plugin is an echo bot that connects to a wsauth gateway as a
// plugin: it presents PLUGIN_API_KEY in the X-Plugin-Token header, prints
// every message it receives, and answers messages from users with an echo.
//
// Environment:
//
//	GATEWAY_URL     the gateway's WebSocket endpoint (default ws://127.0.0.1:8080/chat)
//	PLUGIN_API_KEY  the plugin key
//
// A refused key (401), or a connection closed with 4401 or 4403 because the
// key was revoked, stops it with a clear message; a gateway that is down
// or answers 503 is retried with exponential backoff.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/mosaicstack/wsauth"
)

type message struct {
	Text string `json:"text"`
	From struct {
		Kind string `json:"kind"`
		Name string `json:"name"`
	} `json:"from"`
}

func main() {
	log.SetFlags(log.LstdFlags)
	url := os.Getenv("GATEWAY_URL")
	if url == "" {
		url = "ws://127.0.0.1:8080/chat"
	}
	key := os.Getenv("PLUGIN_API_KEY")
	if key == "" {
		log.Fatal("PLUGIN_API_KEY is not set")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := session(ctx, url, key)
		var he *wsauth.HandshakeError
		if errors.As(err, &he) && !he.Retryable() {
			log.Fatalf("the gateway refused the plugin key (%d %s): check PLUGIN_API_KEY", he.StatusCode, http.StatusText(he.StatusCode))
		}
		if code := websocket.CloseStatus(err); code == 4401 || code == 4403 {
			log.Fatalf("the gateway closed the connection with %d: the plugin key was revoked; check PLUGIN_API_KEY", code)
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			attempt = 0 // a connection that worked resets the backoff
		}
		wait := backoff(attempt)
		if he != nil && he.RetryAfter > wait {
			wait = he.RetryAfter
		}
		log.Printf("disconnected: %v; retrying in %s", err, wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// session connects once and echoes until the connection ends.
func session(ctx context.Context, url, key string) error {
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := wsauth.DialPlugin(dialCtx, url, key, nil)
	cancel()
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	log.Printf("connected to %s", url)
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != -1 {
				return fmt.Errorf("closed by the gateway: %w", err)
			}
			return err
		}
		var m message
		if err := json.Unmarshal(data, &m); err != nil {
			log.Printf("unreadable message: %v", err)
			continue
		}
		fmt.Printf("%s (%s): %s\n", m.From.Name, m.From.Kind, m.Text)
		if m.From.Kind == string(wsauth.KindUser) {
			if err := conn.Write(ctx, websocket.MessageText, []byte("echo: "+m.Text)); err != nil {
				return err
			}
		}
	}
}

// backoff is exponential with full jitter, capped at 30 seconds.
func backoff(attempt int) time.Duration {
	ceiling := 500 * time.Millisecond << min(attempt, 6)
	return time.Duration(rand.Int64N(int64(min(ceiling, 30*time.Second)))) + 100*time.Millisecond
}
