package wsauth

import (
	"container/heap"
	"context"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pipeListener serves HTTP over in-memory pipes, so that a test can hold
// thousands of real WebSocket connections without a file descriptor each.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// pipeGateway is a gateway on in-memory pipes whose handler returns right
// after the upgrade and keeps the connection, as a hub would.
type pipeGateway struct {
	m      *Middleware
	l      *pipeListener
	client *http.Client

	mu      sync.Mutex
	server  []*websocket.Conn
	ctxs    []context.Context
	clients []*websocket.Conn
}

// newPipeGateway starts a gateway. With plain set, the handler upgrades with
// websocket.Accept instead of Middleware.Accept: the baseline for memory.
func newPipeGateway(t testing.TB, opts Options, plain bool) *pipeGateway {
	t.Helper()
	m, err := New(opts)
	require.NoError(t, err)
	g := &pipeGateway{m: m, l: newPipeListener()}
	srv := &http.Server{Handler: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c *websocket.Conn
		var ctx context.Context
		var err error
		if plain {
			c, err = websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		} else {
			c, ctx, err = m.Accept(w, r, nil)
		}
		if err != nil {
			return
		}
		g.mu.Lock()
		g.server = append(g.server, c)
		g.ctxs = append(g.ctxs, ctx)
		g.mu.Unlock()
	}))}
	go func() { _ = srv.Serve(g.l) }()
	g.client = &http.Client{Transport: &http.Transport{DialContext: g.l.dial}}
	t.Cleanup(func() {
		g.closeAll()
		_ = srv.Close()
		g.client.CloseIdleConnections()
	})
	return g
}

// open makes n connections, the i-th with the header made by header(i).
func (g *pipeGateway) open(t testing.TB, n int, header func(i int) http.Header) {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, 1)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				c, _, err := websocket.Dial(ctx, "ws://pipe/chat", &websocket.DialOptions{HTTPClient: g.client, HTTPHeader: header(i)})
				cancel()
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				g.mu.Lock()
				g.clients = append(g.clients, c)
				g.mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("dial: %v", err)
	default:
	}
	// A client's Dial may return before the handler has kept the conn.
	g.mu.Lock()
	want := len(g.clients)
	g.mu.Unlock()
	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.server) == want
	}, 30*time.Second, time.Millisecond, "the server kept fewer connections than were opened")
}

func (g *pipeGateway) closeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.server {
		c.CloseNow()
	}
	for _, c := range g.clients {
		c.CloseNow()
	}
	g.server, g.ctxs, g.clients = nil, nil, nil
}

// expediteChecks makes every session due for a check now, through the
// same timer that runs the periodic checks.
func (s *liveSet) expediteChecks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.m.now().UnixNano()
	for _, g := range s.queue {
		g.nextCheck = now
	}
	heap.Init(&s.queue)
	s.timerAt = 0
	s.armLocked(now)
}

func (s *liveSet) checksInFlight() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.queue {
		if g.checking {
			return true
		}
	}
	return false
}

func sessionHeader(sessions int) func(i int) http.Header {
	return func(i int) http.Header { return hdr("Cookie", testCookie+"=s"+strconv.Itoa(i%sessions)) }
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// The scale at which live connections are measured: 10,000 sockets, of
// one session each for memory (nothing shared, the worst case), or of 100
// sessions for revalidation.
const (
	liveConns    = 10000
	liveSessions = 100
)

// revalidationGateway opens conns sockets of sessions sessions, each valid
// for an hour, on a gateway that revalidates them only when
// revalidationRound says so.
func revalidationGateway(tb testing.TB, conns, sessions int) (*pipeGateway, *countingValidator) {
	tb.Helper()
	v := newCountingValidator()
	for i := range sessions {
		v.set("s"+strconv.Itoa(i), userUntil("u"+strconv.Itoa(i), time.Now().Add(time.Hour)))
	}
	g := newPipeGateway(tb, Options{Sessions: v, RevalidateInterval: time.Hour, ValidatorTimeout: 30 * time.Second}, false)
	g.open(tb, conns, sessionHeader(sessions))
	return g, v
}

// revalidationRound makes every session due for its check now, through the
// timer that runs the periodic checks, waits until the checks are done and
// returns the upstream calls they made.
func revalidationRound(tb testing.TB, g *pipeGateway, v *countingValidator, sessions int) int64 {
	tb.Helper()
	before := v.calls.Load()
	g.m.live.expediteChecks()
	require.Eventually(tb, func() bool {
		return v.calls.Load()-before >= int64(sessions) && !g.m.live.checksInFlight()
	}, 60*time.Second, 100*time.Microsecond)
	return v.calls.Load() - before
}

// TestRevalidationIsCoalescedPerSession holds 10,000 sockets of 100
// sessions and counts the validator calls of each revalidation round.
func TestRevalidationIsCoalescedPerSession(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	start := time.Now()
	g, v := revalidationGateway(t, liveConns, liveSessions)
	t.Logf("opened %d sockets in %v", liveConns, time.Since(start).Round(time.Millisecond))
	assert.Less(t, runtime.NumGoroutine()-goroutines, 100, "goroutines grew with the connections")
	assert.Equal(t, liveSessions, g.m.live.size(), "one group per session")

	for round := 1; round <= 2; round++ {
		before := v.calls.Load()
		revalidationRound(t, g, v, liveSessions)
		time.Sleep(200 * time.Millisecond) // a call too many would come now
		calls := v.calls.Load() - before
		assert.EqualValues(t, liveSessions, calls, "upstream calls in round %d", round)
		t.Logf("revalidation round %d: %d sockets over %d sessions made %d upstream calls", round, liveConns, liveSessions, calls)
	}
	g.mu.Lock()
	for _, ctx := range g.ctxs {
		require.NoError(t, ctx.Err())
	}
	g.mu.Unlock()

	// Closing the sockets empties the set.
	g.closeAll()
	require.Eventually(t, func() bool { return g.m.live.size() == 0 }, 30*time.Second, 10*time.Millisecond)
}

// liveCost is what conns live connections cost, per connection.
type liveCost struct {
	plain, ours float64 // heap with websocket.Accept and with Middleware.Accept, bytes
	goroutines  float64 // goroutines Middleware.Accept adds beyond websocket.Accept
}

// library is the heap the library keeps beyond websocket.Accept.
func (c liveCost) library() float64 { return c.ours - c.plain }

// measureLiveCost opens conns connections with websocket.Accept, then as
// many with Middleware.Accept, each of a session of its own (the worst
// case: nothing is shared), and measures the heap and the goroutines each
// set holds while open.
func measureLiveCost(tb testing.TB, conns int) liveCost {
	tb.Helper()
	measure := func(plain bool) (heap, goroutines float64) {
		v := newCountingValidator()
		for i := range conns + 10 {
			v.set("s"+strconv.Itoa(i), userUntil("u"+strconv.Itoa(i), time.Now().Add(time.Hour)))
		}
		g := newPipeGateway(tb, Options{Sessions: v, RevalidateInterval: time.Hour}, plain)
		g.open(tb, 10, sessionHeader(conns+10)) // warm up pools and transports
		before, n := heapInUse(), runtime.NumGoroutine()
		g.open(tb, conns, func(i int) http.Header { return sessionHeader(conns + 10)(i + 10) })
		after, m := heapInUse(), runtime.NumGoroutine()
		runtime.KeepAlive(g)
		g.closeAll()
		return float64(int64(after)-int64(before)) / float64(conns), float64(m-n) / float64(conns)
	}
	var c liveCost
	var plainG, oursG float64
	c.plain, plainG = measure(true)
	c.ours, oursG = measure(false)
	c.goroutines = oursG - plainG
	return c
}

// TestLiveConnectionMemory measures what Middleware.Accept keeps per
// connection beyond websocket.Accept, with 10,000 live connections of a
// session each.
func TestLiveConnectionMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector inflates every allocation; CI runs this test without it")
	}
	c := measureLiveCost(t, liveConns)
	t.Logf("heap per connection: websocket.Accept %.0f B, Middleware.Accept %.0f B: %.0f B kept by the library; %.3f goroutines per connection added",
		c.plain, c.ours, c.library(), c.goroutines)
	assert.Less(t, c.goroutines, 0.01, "goroutines per live connection")
	assert.LessOrEqual(t, c.library(), 1024.0, "library memory per live connection")
}

// BenchmarkLiveConnections measures what connections opened with
// Middleware.Accept cost while they are open.
//
// memory: the heap the library keeps per connection beyond websocket.Accept
// (library-B/conn; websocket-B/conn is websocket.Accept's own for scale)
// and the goroutines it adds per connection, with 10,000 live connections
// of a session each. Every iteration opens them all twice and measures, so
// no ns/op is reported.
//
// revalidation: one revalidation interval of 10,000 connections over 100
// sessions: the calls it makes to the session validator
// (upstream-calls/interval) and, as ns/op, the time its checks take with a
// validator that answers at once.
func BenchmarkLiveConnections(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		var sum liveCost
		for b.Loop() {
			c := measureLiveCost(b, liveConns)
			sum.plain += c.plain
			sum.ours += c.ours
			sum.goroutines += c.goroutines
		}
		n := float64(b.N)
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(sum.library()/n, "library-B/conn")
		b.ReportMetric(sum.plain/n, "websocket-B/conn")
		b.ReportMetric(sum.goroutines/n, "goroutines/conn")
	})
	b.Run("revalidation", func(b *testing.B) {
		g, v := revalidationGateway(b, liveConns, liveSessions)
		var calls int64
		for b.Loop() {
			calls += revalidationRound(b, g, v, liveSessions)
		}
		b.ReportMetric(float64(calls)/float64(b.N), "upstream-calls/interval")
	})
}
