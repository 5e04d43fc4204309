package wsauth_test

import (
	"context"
	"go/build"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/go-chi/chi/v5"
	"github.com/gorilla/mux"
	"github.com/mosaicstack/wsauth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The middleware is mounted the way people mount it in the routers they
// already use. Each router gets a real handshake over loopback, and the
// refusals of the contract must still refuse: a router in front of the
// middleware must neither break the upgrade (it needs http.Hijacker) nor
// lose the identity, the route's path values, or a refusal.

const (
	routerKey    = "router-test-plugin-key-0123456789abcdef"
	routerCookie = "router_session"
)

// routerSessions accepts the session cookie "good-NAME" as user NAME.
var routerSessions = wsauth.SessionValidatorFunc(func(_ context.Context, r *http.Request) (*wsauth.Identity, error) {
	c, err := r.Cookie(routerCookie)
	if err != nil {
		return nil, wsauth.ErrNoCredentials
	}
	name, ok := strings.CutPrefix(c.Value, "good-")
	if !ok {
		return nil, wsauth.ErrInvalidCredentials
	}
	return &wsauth.Identity{Subject: "id-" + name, Name: name, SessionID: "sid-" + name}, nil
})

// routed is what the chat handler tells the client once the socket is open.
type routed struct {
	Kind  wsauth.Kind `json:"kind"`
	Name  string      `json:"name"`
	Room  string      `json:"room"`  // the route's {room} as the router reports it
	Token bool        `json:"token"` // X-Plugin-Token still visible to the handler
}

// chatHandler upgrades and reports the identity and the room that reached
// it; room reads the path value the way the router in front documents.
type chatHandler struct {
	room func(*http.Request) string
	runs atomic.Int64
}

func (h *chatHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.runs.Add(1)
	id, ok := wsauth.FromContext(r.Context())
	if !ok {
		http.Error(w, "no identity", http.StatusInternalServerError)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	_ = wsjson.Write(ctx, c, routed{Kind: id.Kind, Name: id.Name, Room: h.room(r), Token: r.Header.Get(wsauth.PluginTokenHeader) != ""})
	c.Close(websocket.StatusNormalClosure, "")
}

func newRouterAuth(t *testing.T) *wsauth.Middleware {
	t.Helper()
	keys, err := wsauth.NewPluginKeys(wsauth.PluginKey{Name: "telegram", Key: routerKey})
	require.NoError(t, err)
	auth, err := wsauth.New(wsauth.Options{PluginKeys: keys, Sessions: routerSessions})
	require.NoError(t, err)
	return auth
}

func TestRouters(t *testing.T) {
	routers := []struct {
		name  string
		mount func(auth *wsauth.Middleware, chat *chatHandler) http.Handler
	}{
		{"http.ServeMux with a method and wildcard pattern", func(auth *wsauth.Middleware, chat *chatHandler) http.Handler {
			chat.room = func(r *http.Request) string { return r.PathValue("room") }
			m := http.NewServeMux()
			m.Handle("GET /rooms/{room}/chat", auth.Handler(chat))
			return m
		}},
		{"chi with r.Use in a group", func(auth *wsauth.Middleware, chat *chatHandler) http.Handler {
			chat.room = func(r *http.Request) string { return chi.URLParam(r, "room") }
			r := chi.NewRouter()
			r.Get("/", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("public")) })
			r.Group(func(r chi.Router) {
				r.Use(auth.Handler)
				r.Get("/rooms/{room}/chat", chat.ServeHTTP)
			})
			return r
		}},
		{"chi with r.With on one route", func(auth *wsauth.Middleware, chat *chatHandler) http.Handler {
			chat.room = func(r *http.Request) string { return chi.URLParam(r, "room") }
			r := chi.NewRouter()
			r.With(auth.Handler).Get("/rooms/{room}/chat", chat.ServeHTTP)
			return r
		}},
		{"gorilla/mux with r.Use on a subrouter", func(auth *wsauth.Middleware, chat *chatHandler) http.Handler {
			chat.room = func(r *http.Request) string { return mux.Vars(r)["room"] }
			r := mux.NewRouter()
			s := r.PathPrefix("/rooms").Subrouter()
			s.Use(auth.Handler)
			s.Handle("/{room}/chat", chat).Methods(http.MethodGet)
			return r
		}},
		{"gorilla/mux wrapping one handler", func(auth *wsauth.Middleware, chat *chatHandler) http.Handler {
			chat.room = func(r *http.Request) string { return mux.Vars(r)["room"] }
			r := mux.NewRouter()
			r.Handle("/rooms/{room}/chat", auth.Handler(chat)).Methods(http.MethodGet)
			return r
		}},
	}
	for _, rt := range routers {
		t.Run(rt.name, func(t *testing.T) {
			chat := &chatHandler{}
			srv := httptest.NewServer(rt.mount(newRouterAuth(t), chat))
			t.Cleanup(srv.Close)
			url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/rooms/lobby/chat"

			t.Run("plugin key opens a socket", func(t *testing.T) {
				got := dialRouted(t, url, http.Header{wsauth.PluginTokenHeader: {routerKey}})
				assert.Equal(t, routed{Kind: wsauth.KindPlugin, Name: "telegram", Room: "lobby"}, got)
			})
			t.Run("session from the same origin opens a socket", func(t *testing.T) {
				got := dialRouted(t, url, http.Header{"Cookie": {routerCookie + "=good-alice"}, "Origin": {srv.URL}})
				assert.Equal(t, routed{Kind: wsauth.KindUser, Name: "alice", Room: "lobby"}, got)
			})

			refusals := []struct {
				name   string
				header http.Header
				want   int
			}{
				{"wrong key", http.Header{wsauth.PluginTokenHeader: {"wrong-" + routerKey}}, http.StatusUnauthorized},
				{"wrong key with a valid session", http.Header{wsauth.PluginTokenHeader: {"wrong-" + routerKey}, "Cookie": {routerCookie + "=good-alice"}}, http.StatusUnauthorized},
				{"no credential", nil, http.StatusUnauthorized},
				{"invalid session", http.Header{"Cookie": {routerCookie + "=forged"}}, http.StatusUnauthorized},
				{"valid session from a foreign origin", http.Header{"Cookie": {routerCookie + "=good-alice"}, "Origin": {"https://evil.example"}}, http.StatusForbidden},
				{"two plugin tokens", http.Header{wsauth.PluginTokenHeader: {routerKey, routerKey}}, http.StatusBadRequest},
			}
			for _, tc := range refusals {
				t.Run(tc.name+" is refused", func(t *testing.T) {
					before := chat.runs.Load()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: tc.header})
					if c != nil {
						c.CloseNow()
					}
					require.Error(t, err)
					require.NotNil(t, resp)
					assert.Equal(t, tc.want, resp.StatusCode)
					assert.Equal(t, before, chat.runs.Load(), "the chat handler must not run")
				})
			}
		})
	}
}

func dialRouted(t *testing.T, url string, header http.Header) routed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header})
	require.NoError(t, err)
	defer c.CloseNow()
	var got routed
	require.NoError(t, wsjson.Read(ctx, c, &got))
	return got
}

// TestLibraryImportsNoRouter keeps the routers above test-only: the
// library's own files import the standard library, coder/websocket and
// golang.org/x packages, nothing else.
func TestLibraryImportsNoRouter(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	require.NoError(t, err)
	for _, imp := range pkg.Imports {
		first, _, _ := strings.Cut(imp, "/")
		std := !strings.Contains(first, ".")
		allowed := std || strings.HasPrefix(imp, "github.com/coder/websocket") || strings.HasPrefix(imp, "golang.org/x/")
		assert.True(t, allowed, "the library imports %s", imp)
	}
}
