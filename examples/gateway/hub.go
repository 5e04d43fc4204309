package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/mosaicstack/wsauth"
)

// maxMessage bounds one chat message read from a client, in bytes.
const maxMessage = 4096

// message is what the gateway broadcasts for every text a client sends.
type message struct {
	Text string    `json:"text"`
	From sender    `json:"from"`
	Time time.Time `json:"time"`
}

// sender is the public part of a client's identity.
type sender struct {
	Kind wsauth.Kind `json:"kind"`
	Name string      `json:"name"`
}

// hub keeps the connected clients and broadcasts to them.
type hub struct {
	logger  *slog.Logger
	mu      sync.Mutex
	clients map[*client]struct{}
	closing bool           // set by closeAll: no new sockets
	running sync.WaitGroup // chat handlers that may hold a socket
}

type client struct {
	conn *websocket.Conn
	send chan []byte
}

func newHub(logger *slog.Logger) *hub {
	return &hub{logger: logger, clients: make(map[*client]struct{})}
}

// chat is the WebSocket handler behind the wsauth middleware: by the time it
// runs, the request is authenticated and carries an identity.
func (h *hub) chat(origins []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := wsauth.FromContext(r.Context())
		if !ok {
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
			return
		}
		// A socket accepted during shutdown would be cut off without
		// a close frame; refuse it before the upgrade instead.
		if !h.enter() {
			http.Error(w, "gateway shutting down", http.StatusServiceUnavailable)
			return
		}
		defer h.running.Done()
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			OriginPatterns: origins,
			// The middleware enforced the Origin rule already; plugins
			// are exempt from it, since a browser cannot send their key.
			InsecureSkipVerify: id.Kind == wsauth.KindPlugin,
		})
		if err != nil {
			return
		}
		conn.SetReadLimit(maxMessage)
		c := &client{conn: conn, send: make(chan []byte, 64)}
		if !h.add(c) {
			_ = conn.Close(websocket.StatusGoingAway, "gateway shutting down")
			return
		}
		defer h.remove(c)

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go c.writeLoop(ctx)
		from := sender{Kind: id.Kind, Name: id.Name}
		for {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			if typ != websocket.MessageText {
				continue
			}
			h.broadcast(message{Text: string(data), From: from, Time: time.Now().UTC()})
		}
	})
}

func (c *client) writeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-c.send:
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.conn.Write(wctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				c.conn.CloseNow()
				return
			}
		}
	}
}

// enter counts a chat handler in, unless the hub is closing.
func (h *hub) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.running.Add(1)
	return true
}

// add registers a connected client, unless the hub is closing.
func (h *hub) add(c *client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.clients[c] = struct{}{}
	return true
}

func (h *hub) remove(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
	c.conn.CloseNow()
}

// broadcast sends m to every client. A client too slow to keep up is
// disconnected rather than allowed to hold everyone else back.
func (h *hub) broadcast(m message) {
	b, err := json.Marshal(m)
	if err != nil {
		h.logger.Error("encode message", "err", err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.send <- b:
		default:
			go c.conn.Close(websocket.StatusPolicyViolation, "too slow")
		}
	}
}

// closeAll tells every client the gateway is going away, refuses new ones,
// and returns when every chat handler has finished (its close handshake
// done or timed out) or ctx ends, so that the process does not exit before
// the close frames are sent.
func (h *hub) closeAll(ctx context.Context) {
	h.mu.Lock()
	h.closing = true
	for c := range h.clients {
		go c.conn.Close(websocket.StatusGoingAway, "gateway shutting down")
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
