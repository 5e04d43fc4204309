package wsauth_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/mosaicstack/wsauth"
)

// exampleKey is a placeholder; real keys come from the environment.
const exampleKey = "example-key-0123456789abcdefghijklmnopqrstuvwxyz"

// The middleware wraps the WebSocket handler; the handler reads the
// identity from the request context and upgrades.
func ExampleNew() {
	keys, err := wsauth.NewPluginKeys(wsauth.PluginKey{Name: "telegram", Key: exampleKey})
	if err != nil {
		log.Fatal(err)
	}
	auth, err := wsauth.New(wsauth.Options{PluginKeys: keys})
	if err != nil {
		log.Fatal(err)
	}
	chat := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := wsauth.FromContext(r.Context())
		fmt.Printf("%s %q connected\n", id.Kind, id.Name)
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
	mux := http.NewServeMux()
	mux.Handle("GET /chat", auth.Handler(chat))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/chat"
	c, err := wsauth.DialPlugin(context.Background(), url, exampleKey, nil)
	if err != nil {
		log.Fatal(err)
	}
	c.CloseNow()

	_, err = wsauth.DialPlugin(context.Background(), url, "not-the-key-"+exampleKey, nil)
	var he *wsauth.HandshakeError
	if errors.As(err, &he) {
		fmt.Println("wrong key:", he.StatusCode, "retryable:", he.Retryable())
	}
	// Output:
	// plugin "telegram" connected
	// wrong key: 401 retryable: false
}

// Named keys give each plugin its own identity; a "#label" lets a new key
// work beside the old one during a rotation.
func ExampleParsePluginKeys() {
	keys, err := wsauth.ParsePluginKeys("telegram=" + exampleKey + ",telegram#next=" + strings.ToUpper(exampleKey))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(keys.Names())

	_, err = wsauth.ParsePluginKeys("discord=short")
	fmt.Println(err)
	// Output:
	// [telegram telegram#next]
	// wsauth: plugin key "discord": key is shorter than 32 characters
}

// A session validator says one of three things: who the user is, that
// there is no valid session (401), or that it could not decide (503).
func ExampleSessionValidatorFunc() {
	sessions := wsauth.SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*wsauth.Identity, error) {
		c, err := r.Cookie("session")
		switch {
		case err != nil:
			return nil, wsauth.ErrNoCredentials
		case c.Value == "s3cr3t-session":
			return &wsauth.Identity{Subject: "u42", Name: "alice"}, nil
		case c.Value == "auth-service-down":
			return nil, fmt.Errorf("%w: connection refused", wsauth.ErrUnavailable)
		default:
			return nil, wsauth.ErrInvalidCredentials
		}
	})
	auth, err := wsauth.New(wsauth.Options{Sessions: sessions})
	if err != nil {
		log.Fatal(err)
	}
	for _, cookie := range []string{"session=s3cr3t-session", "session=forged", "session=auth-service-down", ""} {
		r := httptest.NewRequest(http.MethodGet, "/chat", nil)
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		id, err := auth.Authenticate(r)
		if err != nil {
			fmt.Println(wsauth.StatusCode(err), err)
			continue
		}
		fmt.Println(id.Kind, id.Name)
	}
	// Output:
	// user alice
	// 401 wsauth: invalid credentials
	// 503 wsauth: session validator unavailable: connection refused
	// 401 wsauth: no credentials
}

func ExampleFromContext() {
	ctx := wsauth.NewContext(context.Background(), &wsauth.Identity{Kind: wsauth.KindUser, Subject: "u42", Name: "alice"})
	if id, ok := wsauth.FromContext(ctx); ok {
		fmt.Println(id.Kind, id.Subject, id.Name)
	}
	// Output: user u42 alice
}

// Failure throttling is on by default. Here a client may fail three times
// a minute; after that, even the right key is refused until an attempt
// comes back.
func ExampleThrottleOptions() {
	keys, err := wsauth.NewPluginKeys(wsauth.PluginKey{Name: "telegram", Key: exampleKey})
	if err != nil {
		log.Fatal(err)
	}
	auth, err := wsauth.New(wsauth.Options{
		PluginKeys: keys,
		Throttle:   wsauth.ThrottleOptions{MaxFailures: 3, Window: time.Minute},
		// Behind a reverse proxy on 10.0.0.2, count the address it
		// forwards for, not the proxy's own.
		TrustedProxies: []string{"10.0.0.2"},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, key := range []string{"guess-1", "guess-2", "guess-3", "guess-4", exampleKey} {
		r := httptest.NewRequest(http.MethodGet, "/chat", nil)
		r.RemoteAddr = "10.0.0.2:40000"
		r.Header.Set("X-Forwarded-For", "203.0.113.9")
		r.Header.Set(wsauth.PluginTokenHeader, key)
		_, err := auth.Authenticate(r)
		after, _ := wsauth.RetryAfter(err)
		fmt.Println(wsauth.StatusCode(err), after.Round(time.Second))
	}
	// Output:
	// 401 0s
	// 401 0s
	// 401 0s
	// 429 20s
	// 429 20s
}

// An Observer turns decisions into metrics; here, counts by method and
// outcome.
func ExampleObserverFunc() {
	var mu sync.Mutex
	counts := map[string]int{}
	keys, err := wsauth.NewPluginKeys(wsauth.PluginKey{Name: "telegram", Key: exampleKey})
	if err != nil {
		log.Fatal(err)
	}
	auth, err := wsauth.New(wsauth.Options{
		PluginKeys: keys,
		Observer: wsauth.ObserverFunc(func(e wsauth.Event) {
			mu.Lock()
			counts[e.Method+" "+string(e.Outcome)]++
			mu.Unlock()
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, key := range []string{exampleKey, "wrong", exampleKey} {
		r := httptest.NewRequest(http.MethodGet, "/chat", nil)
		r.Header.Set(wsauth.PluginTokenHeader, key)
		_, _ = auth.Authenticate(r)
	}
	fmt.Println(counts)
	// Output: map[plugin accepted:2 plugin invalid_credentials:1]
}

// In accept-then-close mode a browser learns why it was refused: the
// socket opens and is closed at once with 4000 plus the HTTP status.
func ExampleOptions_acceptThenClose() {
	keys, err := wsauth.NewPluginKeys(wsauth.PluginKey{Name: "telegram", Key: exampleKey})
	if err != nil {
		log.Fatal(err)
	}
	auth, err := wsauth.New(wsauth.Options{PluginKeys: keys, AcceptThenClose: true})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(auth.Handler(http.NotFoundHandler()))
	defer srv.Close()

	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.CloseNow()
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		fmt.Println(ce.Code, ce.Reason)
	}
	// Output: StatusCode(4401) Unauthorized
}
