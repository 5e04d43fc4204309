package wsauth_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

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
