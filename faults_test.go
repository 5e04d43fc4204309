package wsauth

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// handshake performs one real handshake and returns the HTTP status of the
// answer (101 when the socket opened) and, for an open socket, what the
// handler saw. Unlike harness.dial it may run on any goroutine.
func handshake(ctx context.Context, url string, client *http.Client, header http.Header) (int, *seen, error) {
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header, HTTPClient: client})
	if err != nil {
		if resp != nil {
			return resp.StatusCode, nil, nil
		}
		return 0, nil, err
	}
	defer c.CloseNow()
	var s seen
	if err := wsjson.Read(ctx, c, &s); err != nil {
		return 0, nil, err
	}
	return http.StatusSwitchingProtocols, &s, nil
}

// TestValidatorIgnoringItsContext: a validator that hangs and ignores its
// context (here: until the test ends, and then it would even say yes)
// gives 503 at the deadline, for many requests at once.
func TestValidatorIgnoringItsContext(t *testing.T) {
	release := make(chan struct{})
	var returned atomic.Int64
	stuck := SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*Identity, error) {
		<-release
		returned.Add(1)
		return &Identity{Subject: "too-late"}, nil
	})
	const n = 50
	// All n come from one address and are being decided at once: each
	// holds one attempt of its throttle budget.
	h := newHarness(t, Options{Sessions: stuck, ValidatorTimeout: 100 * time.Millisecond, Throttle: ThrottleOptions{MaxFailures: n}})
	defer close(release) // before the harness's cleanup, so goleak sees the validators return

	start := time.Now()
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			statuses[i], _, _ = handshake(ctx, h.wsURL(""), nil, hdr("Cookie", testCookie+"=x"))
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i, s := range statuses {
		assert.Equal(t, http.StatusServiceUnavailable, s, "request %d", i)
	}
	assert.Less(t, elapsed, 3*time.Second, "%d requests against a hung validator", n)
	assert.Zero(t, h.handled.Load())
	assert.Zero(t, returned.Load(), "the validators were still hanging when the answers came")
}

// TestPanickingValidatorUnderLoad: panics are contained per request; the
// server keeps serving the requests around them.
func TestPanickingValidatorUnderLoad(t *testing.T) {
	const n = 100
	// All n come from one address and may be decided at once: each
	// holds one attempt of its throttle budget meanwhile.
	h := newHarness(t, Options{Throttle: ThrottleOptions{MaxFailures: n}})
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cookie := testCookie + "=panic"
			if i%2 == 1 {
				cookie = testCookie + "=good-alice"
			}
			statuses[i], _, _ = handshake(ctx, h.wsURL(""), nil, hdr("Cookie", cookie))
		})
	}
	wg.Wait()
	for i, s := range statuses {
		want := http.StatusInternalServerError
		if i%2 == 1 {
			want = http.StatusSwitchingProtocols
		}
		assert.Equal(t, want, s, "request %d", i)
	}
	got, _ := h.dial(t, "", hdr(PluginTokenHeader, testKey))
	require.NotNil(t, got, "the server stopped serving after panics")
}
