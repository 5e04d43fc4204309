//go:build nodeplugin

package main

// Tests of examples/node-plugin, the JavaScript plugin, run by Node against
// the example gateway and against a scripted gateway. Run them with
//
//	(cd examples/node-plugin && npm ci) && go test -tags nodeplugin ./examples/gateway
//
// They fail, never skip, when Node or the plugin's packages are missing:
// the build tag is the opt-in.

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/mosaicstack/wsauth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nodePluginDir is the JavaScript plugin, relative to this package.
const nodePluginDir = "../node-plugin"

// startNodePlugin runs `node index.js` in examples/node-plugin.
func startNodePlugin(t *testing.T, env ...string) *process {
	t.Helper()
	node, err := exec.LookPath("node")
	require.NoError(t, err, "Node is needed for the Node plugin tests")
	_, err = os.Stat(filepath.Join(nodePluginDir, "node_modules", "ws", "package.json"))
	require.NoError(t, err, "the Node plugin's packages are missing: run npm ci in examples/node-plugin (.ci/run does)")
	cmd := exec.Command(node, "index.js")
	cmd.Dir = nodePluginDir
	return startCommand(t, "node-plugin", cmd, env...)
}

// waitExit waits for the process to end and returns its exit status.
func (p *process) waitExit(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatalf("the process did not stop:\n%s", p.output())
		return 0
	}
}

func TestNodePluginEchoesUsers(t *testing.T) {
	_, base := startGateway(t, "PLUGIN_API_KEY="+e2eKey)
	plugin := startNodePlugin(t, "GATEWAY_URL="+wsURL(base), "PLUGIN_API_KEY="+e2eKey)
	plugin.waitFor(t, "connected to "+wsURL(base))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	user, _, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{
		HTTPHeader: http.Header{"Cookie": {login(t, base, "alice")}, "Origin": {base}},
	})
	require.NoError(t, err)
	defer user.CloseNow()

	// Each message and then its echo. The plugin reads in order, so had it
	// answered its own echo of the first message, that answer would
	// arrive before the echo of the second.
	for _, text := range []string{"hello <b>node</b>", "second"} {
		require.NoError(t, user.Write(ctx, websocket.MessageText, []byte(text)))
		got := readMessage(t, ctx, user)
		assert.Equal(t, message{Text: text, From: sender{Kind: wsauth.KindUser, Name: "alice"}}, message{Text: got.Text, From: got.From})
		got = readMessage(t, ctx, user)
		assert.Equal(t, message{Text: "echo: " + text, From: sender{Kind: wsauth.KindPlugin, Name: "plugin"}}, message{Text: got.Text, From: got.From})
	}
	plugin.waitFor(t, `alice \(user\): hello <b>node</b>`)
	plugin.waitFor(t, `plugin \(plugin\): echo: second`)
	assert.NotContains(t, plugin.output(), "echo: echo:")
	assert.NotContains(t, plugin.output(), e2eKey)

	// SIGINT closes the connection and ends the plugin cleanly.
	require.NoError(t, plugin.cmd.Process.Signal(os.Interrupt))
	assert.Equal(t, 0, plugin.waitExit(t))
}

func TestNodePluginStopsOnAWrongKey(t *testing.T) {
	_, base := startGateway(t, "PLUGIN_API_KEY="+e2eKey)
	wrong := "wrong-" + e2eKey
	plugin := startNodePlugin(t, "GATEWAY_URL="+wsURL(base), "PLUGIN_API_KEY="+wrong)
	assert.Equal(t, 1, plugin.waitExit(t))
	out := plugin.output()
	assert.Contains(t, out, "the gateway refused the plugin key (401 Unauthorized): check PLUGIN_API_KEY")
	assert.NotContains(t, out, "retrying")
	assert.NotContains(t, out, wrong)
}

// A scripted gateway answers each handshake in turn the way a real one
// does when things go wrong: the plugin must retry through all of them,
// echo when it gets through, and stop when its key is revoked.
func TestNodePluginRetriesUntilItsKeyIsRevoked(t *testing.T) {
	// The plugin starts before anything listens: a network error.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	url := "ws://" + addr + "/chat"
	plugin := startNodePlugin(t, "GATEWAY_URL="+url, "PLUGIN_API_KEY="+e2eKey)
	plugin.waitFor(t, "cannot reach the gateway: connect ECONNREFUSED")

	var handshakes atomic.Int64
	echoed := make(chan string, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(wsauth.PluginTokenHeader) != e2eKey {
			http.Error(w, "wrong key", http.StatusUnauthorized)
			return
		}
		n := handshakes.Add(1)
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "auth service unavailable", http.StatusServiceUnavailable)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		switch n {
		case 2:
			c.Close(4503, "auth service unavailable")
		case 3:
			c.Close(websocket.StatusGoingAway, "restarting")
		case 4:
			// CloseNow drops the connection with no close frame: 1006.
		default:
			_ = c.Write(ctx, websocket.MessageText, []byte(`{"text":"still there?","from":{"kind":"user","name":"bob"}}`))
			_, data, err := c.Read(ctx)
			if err == nil {
				echoed <- string(data)
			}
			c.Close(4401, "plugin key revoked")
		}
	}))
	// The scripted gateway comes up on the address the plugin is dialling.
	srv.Listener, err = net.Listen("tcp", addr)
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(srv.Close)

	select {
	case got := <-echoed:
		assert.Equal(t, "echo: still there?", got)
	case <-time.After(60 * time.Second):
		t.Fatalf("no echo:\n%s", plugin.output())
	}
	assert.Equal(t, 1, plugin.waitExit(t))
	assert.EqualValues(t, 5, handshakes.Load())

	out := plugin.output()
	for _, want := range []string{
		"the gateway answered 503 Service Unavailable; retrying in ",
		"disconnected (4503 auth service unavailable): auth service unavailable; retrying in ",
		"disconnected (1001 restarting): gateway going away; retrying in ",
		"disconnected (1006): connection lost; retrying in ",
		"bob (user): still there?",
		"disconnected (4401 plugin key revoked): the gateway no longer accepts the plugin key; check PLUGIN_API_KEY",
	} {
		assert.Contains(t, out, want)
	}
	assert.NotContains(t, out, e2eKey)
	// The 503 asked for a second: the next attempt waited at least that.
	i := strings.Index(out, "the gateway answered 503")
	require.GreaterOrEqual(t, i, 0)
	assert.Regexp(t, `^the gateway answered 503 Service Unavailable; retrying in (1\.\d|[2-9]\.\d|\d\d+\.\d) s`, out[i:])
}
