package wsauth

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/coder/websocket"
)

// refuse answers a refused request. In accept-then-close mode a WebSocket
// handshake is accepted only to be closed at once with the close code for
// err; anything else goes to the error handler.
func (m *Middleware) refuse(w http.ResponseWriter, r *http.Request, err error) {
	if !m.acceptThenClose || !isWebSocketHandshake(r) {
		m.errorHandler(w, r, err)
		return
	}
	// The Origin rule has been applied already; a page on a foreign site
	// learns nothing from a socket that is closed with 4403 at once.
	c, aerr := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if aerr != nil {
		return // Accept has answered the malformed handshake itself.
	}
	// Close sends the close frame, then reads the client's frames until
	// its close frame arrives, discarding their payloads, for five
	// seconds at most (and five more at most to write the frame to a
	// client that does not read). None of it reaches a handler.
	// coder/websocket offers no way to send the close frame without this
	// handshake, and closing the connection with the client's frames
	// unread could reset it before the client has read the close code.
	_ = c.Close(closeCode(err), closeReason(err))
}

// closeCode returns the WebSocket close code that stands for the HTTP
// status [StatusCode] gives err: 4000 plus the status (4400, 4401, 4403,
// 4429, 4500, 4503).
func closeCode(err error) websocket.StatusCode {
	return websocket.StatusCode(4000 + StatusCode(err))
}

// closeReason returns a short reason for the close frame: the status text,
// and when to retry if err invites it. It is far below the 123 bytes a
// close reason may take, and never says more than the status does.
func closeReason(err error) string {
	reason := http.StatusText(StatusCode(err))
	if after, ok := RetryAfter(err); ok {
		reason += "; retry after " + strconv.FormatInt(retrySeconds(after), 10) + "s"
	}
	return reason
}

// isWebSocketHandshake reports whether r asks for a WebSocket upgrade.
func isWebSocketHandshake(r *http.Request) bool {
	return r.Method == http.MethodGet &&
		headerHasToken(r.Header, "Connection", "upgrade") &&
		headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
