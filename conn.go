package wsauth

import (
	"bufio"
	"container/heap"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/coder/websocket"
)

// DefaultRevalidateInterval is the default of [Options.RevalidateInterval].
const DefaultRevalidateInterval = time.Minute

// StatusSessionEnded is the close code (4000 + 401) with which the library
// closes a connection opened by [Middleware.Accept] when its session
// expires or is revoked, or its plugin key is removed. A client should
// authenticate again before it reconnects.
const StatusSessionEnded websocket.StatusCode = 4401

// ErrSessionEnded is the cause ([context.Cause]) of the context returned by
// [Middleware.Accept] when the library closed the connection because its
// identity is no longer valid. The error's text says why: "session
// expired", "session revoked" or "plugin key removed".
var ErrSessionEnded = errors.New("wsauth: session ended")

// maxParallelChecks bounds the revalidations of one middleware that run at
// once, however many timer firings made them due, so that a burst of due
// sessions, or an auth service that hangs, does not become a burst of
// calls at the auth service.
const maxParallelChecks = 8

// endReason is why the library closed a connection: the close reason sent
// to the client (at most 123 bytes) and the cause of its context.
type endReason struct {
	text string
	err  error
}

func newEndReason(text string) *endReason {
	return &endReason{text: text, err: fmt.Errorf("%w: %s", ErrSessionEnded, text)}
}

var (
	endExpired    = newEndReason("session expired")
	endRevoked    = newEndReason("session revoked")
	endKeyRemoved = newEndReason("plugin key removed")
)

// Accept upgrades an authenticated request to a WebSocket connection, like
// [websocket.Accept], and ties the connection to the identity that
// [Middleware.Handler] put in the request context.
//
// The returned context carries the identity ([FromContext]), none of the
// request's other values and not its cancellation (the request ends when
// the handler returns; the connection lives on). It ends when the
// connection does:
//
//   - when the session expires (Identity.Expires), when a revalidation
//     finds it revoked (every [Options.RevalidateInterval]), or when the
//     plugin key that opened it is removed by [PluginKeys.Reload], the
//     library closes the connection with [StatusSessionEnded] (4401) and a
//     short reason, and once the close handshake is over (a few seconds at
//     most) the context ends with a cause that wraps [ErrSessionEnded];
//   - when the connection closes for any other reason, the context is
//     cancelled with [context.Canceled].
//
// Pass the context to Read and Write to stop work when the session ends.
// Revalidation runs on one timer per middleware, shared by all
// connections, and the connections of one session (the same Subject and
// SessionID) share one check of the validator per interval; a validator
// that reports no SessionID gets one check per connection. A check calls
// the validator with a request that carries only the credential of the
// request that opened the session's first connection, its path, Host and
// RemoteAddr. The credential is what the validator reads: for the
// validator of [NewBetterAuth] (cached or not), its session cookies and
// bearer token; otherwise the whole Cookie and Authorization headers, or
// the CredentialHeaders of a [NewSessionCache]. If a check cannot decide
// (the auth service is down), the connections stay open until a later
// check decides or the session's expiry passes.
//
// opts is not modified. For a plugin, coder/websocket's own Origin check is
// skipped: plugins are exempt from the Origin rule. For a user, Accept
// applies the middleware's Origin rule ([Options.AllowedOrigins]) itself and
// refuses a foreign origin with 403; coder/websocket's check runs as well
// only if opts sets OriginPatterns.
//
// If the request carries no identity, or its session has expired, Accept
// refuses it with the middleware's error handler (401) before upgrading.
// So it does, and logs a warning, for a user whose credential is larger
// than 8 KiB: a connection keeps its credential for as long as it is open,
// and a client must not make the gateway keep a header of any size. On any
// error the response has been written and no connection exists.
func (m *Middleware) Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions) (*websocket.Conn, context.Context, error) {
	id, ok := FromContext(r.Context())
	var err error
	switch {
	case !ok:
		err = fmt.Errorf("%w: Accept: the request carries no identity (is the handler wrapped by Middleware.Handler?)", ErrNoCredentials)
	case id.expired(m.now()):
		err = fmt.Errorf("%w: session expired", ErrInvalidCredentials)
	}
	if err != nil {
		m.errorHandler(w, r, err)
		return nil, nil, err
	}
	var o websocket.AcceptOptions
	if opts != nil {
		o = *opts
	}
	switch {
	case id.Kind == KindPlugin:
		o.InsecureSkipVerify = true
	case !m.originAllowed(r):
		err = ErrForbiddenOrigin
		m.errorHandler(w, r, err)
		return nil, nil, err
	case o.OriginPatterns == nil:
		// The Origin rule was applied just above, with the patterns'
		// own syntax, which coder/websocket's path.Match would read
		// differently.
		o.InsecureSkipVerify = true
	}
	var cred credential
	if id.Kind != KindPlugin && m.sessions != nil {
		cred = m.live.credentialOf(r)
		if n := cred.size(); n > maxCredentialBytes {
			err = fmt.Errorf("%w: a credential of %d bytes is larger than the %d bytes a connection may keep to revalidate its session", ErrInvalidCredentials, n, maxCredentialBytes)
			if m.logger != nil {
				m.logger.LogAttrs(r.Context(), slog.LevelWarn, "wsauth: refused a connection whose credential is too large to keep",
					slog.String("subject", id.Subject), slog.String("session", id.SessionID), slog.Int("bytes", n))
			}
			m.errorHandler(w, r, err)
			return nil, nil, err
		}
	}
	lc := &liveConn{}
	c, err := websocket.Accept(notifyingWriter{ResponseWriter: w, set: m.live, lc: lc}, r, &o)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancelCause(NewContext(context.Background(), id))
	m.live.add(lc, c, cancel, id, cred)
	return c, ctx, nil
}

// notifyingWriter hands coder/websocket a net.Conn that tells the live set
// when it is closed, so that a connection is forgotten the moment it ends
// without a goroutine watching it.
type notifyingWriter struct {
	http.ResponseWriter
	set *liveSet
	lc  *liveConn
}

// Hijack hijacks the underlying connection, found through Unwrap.
func (w notifyingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &notifyingConn{Conn: nc, set: w.set, lc: w.lc}, brw, nil
}

// Unwrap returns the wrapped ResponseWriter.
func (w notifyingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type notifyingConn struct {
	net.Conn
	set *liveSet
	lc  *liveConn
}

func (c *notifyingConn) Close() error {
	err := c.Conn.Close()
	c.set.remove(c.lc)
	return err
}

// liveConn is one connection opened with Accept. Its fields are guarded by
// the live set's mutex.
type liveConn struct {
	conn       weak.Pointer[websocket.Conn] // weak: an abandoned Conn is still collected and closed
	cancel     context.CancelCauseFunc
	group      *connGroup // nil if there is nothing to watch
	prev, next *liveConn
	state      connState
	end        *endReason // why the library closed it
}

type connState uint8

const (
	connPending connState = iota // upgraded, not yet registered
	connLive
	connGone  // closed before it was registered
	connEnded // closed, or being closed, by the library
)

// connGroup is the connections that share one session, or one plugin key.
type connGroup struct {
	head *liveConn
	n    int

	// Session groups.
	key       sessionKey
	cred      credential
	expires   int64 // Unix nanoseconds; 0: no expiry
	nextCheck int64 // Unix nanoseconds
	checking  bool
	index     int // in the queue; -1 once removed

	// Plugin groups.
	plugin *pluginKey
}

type sessionKey struct{ subject, session string }

type pluginKey struct {
	name string
	sum  [sha256.Size]byte
}

// event is when the group next needs attention: its expiry or its check.
func (g *connGroup) event() int64 {
	if g.expires != 0 && g.expires < g.nextCheck {
		return g.expires
	}
	return g.nextCheck
}

// expired reports whether the group's session has ended at now.
func (g *connGroup) expired(now int64) bool { return g.expires != 0 && now >= g.expires }

// unixNano is t in Unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// maxCredentialBytes bounds the credential that a session's connections
// keep for revalidation: Accept refuses a connection whose credential is
// larger, so that a client cannot make the gateway hold a large header
// (up to the server's MaxHeaderBytes, a megabyte by default) for as long
// as its socket stays open. Common reverse proxies refuse a header line
// of this size already.
const maxCredentialBytes = 8 << 10

// credential is what a revalidation replays: the credential of the request
// that opened the first connection of the session, as the session
// validator reads it (for the Better Auth validator, its session cookies
// and bearer token; otherwise its credential headers), and its path, host
// and remote address. Nothing else of the request is kept.
type credential struct {
	path       string
	host       string
	remoteAddr string
	headers    []credentialHeader // a slice takes less memory than a map
}

type credentialHeader struct {
	name   string // canonical
	values []string
}

// size returns the bytes of the credential's header names and values.
func (c *credential) size() int {
	n := 0
	for _, ch := range c.headers {
		for _, v := range ch.values {
			n += len(ch.name) + len(v)
		}
	}
	return n
}

func (c *credential) request() *http.Request {
	h := make(http.Header, len(c.headers))
	for _, ch := range c.headers {
		h[ch.name] = slices.Clone(ch.values)
	}
	r := &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: c.path},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Body:       http.NoBody,
		Host:       c.host,
		RemoteAddr: c.remoteAddr,
	}
	return r.WithContext(withRevalidation(context.Background()))
}

// liveSet tracks the connections opened with one middleware's Accept. It
// runs no goroutine of its own: one timer fires when the next session is
// due for a check or expires, and Reload and closing connections call in.
type liveSet struct {
	m        *Middleware
	interval time.Duration
	cred     credentialReader // what of a request a revalidation replays

	mu        sync.Mutex
	sessions  map[sessionKey]*connGroup
	plugins   map[pluginKey]*connGroup
	queue     groupQueue
	timer     *time.Timer
	timerAt   int64        // Unix nanoseconds; 0: not armed
	stopWatch func()       // stops watching the plugin keys
	due       []*connGroup // waiting for a check, oldest first
	checkers  int          // goroutines running checks; at most maxParallelChecks

	// keysRead, if set (by tests, with mu held), runs right after a
	// plugin connection has read the key set it is checked against.
	keysRead func()
}

func newLiveSet(m *Middleware, interval time.Duration) *liveSet {
	if interval == 0 {
		interval = DefaultRevalidateInterval
	}
	s := &liveSet{
		m:        m,
		interval: interval,
		cred:     credentialReaderOf(m.sessions),
		sessions: make(map[sessionKey]*connGroup),
		plugins:  make(map[pluginKey]*connGroup),
	}
	return s
}

// add registers an accepted connection under its identity's session or
// plugin key.
func (s *liveSet) add(lc *liveConn, c *websocket.Conn, cancel context.CancelCauseFunc, id *Identity, cred credential) {
	now := s.m.now().UnixNano()
	s.mu.Lock()
	lc.conn, lc.cancel = weak.Make(c), cancel
	if lc.state == connGone {
		s.mu.Unlock()
		cancel(nil)
		return
	}
	lc.state = connLive
	var ended []*liveConn
	if id.Kind == KindPlugin {
		ended = s.addPluginLocked(lc, id)
	} else {
		s.addSessionLocked(lc, id, cred, now)
	}
	s.mu.Unlock()
	s.close(ended)
}

func (s *liveSet) addPluginLocked(lc *liveConn, id *Identity) []*liveConn {
	keys := s.m.keys
	if id.KeyID == "" || keys == nil {
		return nil // not authenticated by a key of this middleware
	}
	// Watch before reading the keys: a Reload that stores its keys after
	// the read below then calls keysChanged, which waits for s.mu and
	// finds this connection, and one that stored them before is seen by
	// the read.
	if s.stopWatch == nil {
		s.stopWatch = keys.watch(s.keysChanged)
	}
	ks := keys.set.Load()
	if s.keysRead != nil {
		s.keysRead()
	}
	sum := id.keySum
	if sum == nil {
		sum = ks.digest(id.KeyID)
	}
	if sum == nil || !ks.has(id.KeyID, sum) {
		// The key went away between the handshake and the upgrade.
		lc.state, lc.end = connEnded, endKeyRemoved
		s.unwatchIfIdleLocked()
		return []*liveConn{lc}
	}
	k := pluginKey{name: id.KeyID, sum: *sum}
	g := s.plugins[k]
	if g == nil {
		g = &connGroup{plugin: &k, index: -1}
		s.plugins[k] = g
	}
	g.link(lc)
	return nil
}

// unwatchIfIdleLocked stops watching the plugin keys when no plugin
// connection is left to close.
func (s *liveSet) unwatchIfIdleLocked() {
	if len(s.plugins) == 0 && s.stopWatch != nil {
		s.stopWatch()
		s.stopWatch = nil
	}
}

func (s *liveSet) addSessionLocked(lc *liveConn, id *Identity, cred credential, now int64) {
	k := sessionKey{subject: id.Subject, session: id.SessionID}
	var g *connGroup
	if k.session != "" {
		g = s.sessions[k]
	}
	if g == nil {
		g = &connGroup{key: k, cred: cred, expires: unixNano(id.Expires), nextCheck: now + int64(s.interval)}
		if s.m.sessions == nil {
			// An identity made by other means, with no validator to
			// ask: only its expiry can end it.
			g.nextCheck = math.MaxInt64
		}
		if k.session != "" {
			// Without a session ID there is nothing to share: the
			// connection is revalidated on its own.
			s.sessions[k] = g
		}
		heap.Push(&s.queue, g)
	} else if e := unixNano(id.Expires); g.expires != 0 && (e == 0 || e > g.expires) {
		g.expires = e
		heap.Fix(&s.queue, g.index)
	}
	g.link(lc)
	s.armLocked(now)
}

// credentialOf copies what a revalidation needs out of r, sharing no
// memory with r, so that the request's other headers are not kept alive.
func (s *liveSet) credentialOf(r *http.Request) credential {
	c := credential{path: strings.Clone(r.URL.Path), host: strings.Clone(r.Host), remoteAddr: strings.Clone(r.RemoteAddr)}
	if h := s.cred.credentialHeader(r); len(h) > 0 {
		c.headers = make([]credentialHeader, 0, len(h))
		for name, values := range h {
			c.headers = append(c.headers, credentialHeader{name: name, values: values})
		}
	}
	return c
}

// remove forgets a connection that has closed, and ends its context.
func (s *liveSet) remove(lc *liveConn) {
	s.mu.Lock()
	var cause error
	switch lc.state {
	case connPending:
		lc.state = connGone
	case connLive:
		lc.state = connGone
		if g := lc.group; g != nil {
			g.unlink(lc)
			if g.n == 0 {
				s.dropGroupLocked(g)
			}
		}
	case connEnded:
		cause = lc.end.err
	}
	cancel := lc.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel(cause)
	}
}

func (g *connGroup) link(lc *liveConn) {
	lc.group, lc.next = g, g.head
	if g.head != nil {
		g.head.prev = lc
	}
	g.head = lc
	g.n++
}

func (g *connGroup) unlink(lc *liveConn) {
	if lc.prev != nil {
		lc.prev.next = lc.next
	} else {
		g.head = lc.next
	}
	if lc.next != nil {
		lc.next.prev = lc.prev
	}
	lc.prev, lc.next, lc.group = nil, nil, nil
	g.n--
}

// dropGroupLocked removes a group from the set.
func (s *liveSet) dropGroupLocked(g *connGroup) {
	if g.index >= 0 {
		heap.Remove(&s.queue, g.index)
		if s.sessions[g.key] == g {
			delete(s.sessions, g.key)
		}
	} else if g.plugin != nil && s.plugins[*g.plugin] == g {
		delete(s.plugins, *g.plugin)
		s.unwatchIfIdleLocked()
	}
}

// endGroupLocked removes a group and marks its connections for closing.
func (s *liveSet) endGroupLocked(g *connGroup, why *endReason) []*liveConn {
	s.dropGroupLocked(g)
	ended := make([]*liveConn, 0, g.n)
	for lc := g.head; lc != nil; {
		next := lc.next
		lc.prev, lc.next, lc.group = nil, nil, nil
		lc.state, lc.end = connEnded, why
		ended = append(ended, lc)
		lc = next
	}
	g.head, g.n = nil, 0
	return ended
}

// close closes connections that endGroupLocked marked, each with a close
// handshake of its own, so that a peer that does not answer holds up no
// other.
func (s *liveSet) close(ended []*liveConn) {
	for _, lc := range ended {
		go func() {
			if c := lc.conn.Value(); c != nil {
				_ = c.Close(StatusSessionEnded, lc.end.text)
			}
			lc.cancel(lc.end.err)
		}()
	}
	if len(ended) > 0 && s.m.logger != nil {
		s.m.logger.LogAttrs(context.Background(), slog.LevelInfo, "wsauth: closing connections",
			slog.String("reason", ended[0].end.text), slog.Int("connections", len(ended)))
	}
}

// armLocked sets the timer for the earliest event in the queue.
func (s *liveSet) armLocked(now int64) {
	if len(s.queue) == 0 {
		return // a timer that fires finds nothing to do
	}
	at := s.queue[0].event()
	if s.timerAt != 0 && at >= s.timerAt {
		return // armed early enough
	}
	s.timerAt = at
	if s.timer == nil {
		s.timer = time.AfterFunc(time.Duration(at-now), s.fire)
	} else {
		s.timer.Reset(time.Duration(at - now))
	}
}

// fire closes the connections of expired sessions and queues the checks
// that are due, starting goroutines to run them up to maxParallelChecks.
func (s *liveSet) fire() {
	now := s.m.now().UnixNano()
	var ended []*liveConn
	s.mu.Lock()
	s.timerAt = 0
	for len(s.queue) > 0 {
		g := s.queue[0]
		if g.event() > now {
			break
		}
		if g.expired(now) {
			ended = append(ended, s.endGroupLocked(g, endExpired)...)
			continue
		}
		if !g.checking {
			g.checking = true
			s.due = append(s.due, g)
		}
		g.nextCheck = now + int64(s.interval)
		heap.Fix(&s.queue, g.index)
	}
	s.armLocked(now)
	start := min(len(s.due), maxParallelChecks-s.checkers)
	s.checkers += start
	s.mu.Unlock()
	s.close(ended)
	for range start {
		go s.runChecks()
	}
}

// runChecks runs the checks that are due, one at a time, until none is
// left. At most maxParallelChecks of it run at once.
func (s *liveSet) runChecks() {
	for {
		s.mu.Lock()
		if len(s.due) == 0 {
			s.due = nil
			s.checkers--
			s.mu.Unlock()
			return
		}
		g := s.due[0]
		s.due[0] = nil
		s.due = s.due[1:]
		s.mu.Unlock()
		s.check(g)
	}
}

// check asks the validator again about one session and acts on the answer.
func (s *liveSet) check(g *connGroup) {
	// g.key and g.cred never change after the group is made.
	id, err := s.m.validate(g.cred.request())
	now := s.m.now()
	s.mu.Lock()
	g.checking = false
	if g.index < 0 {
		s.mu.Unlock()
		return // closed meanwhile
	}
	var why *endReason
	switch {
	case err == nil && id != nil && id.Subject == g.key.subject && (g.key.session == "" || id.SessionID == g.key.session):
		if id.expired(now) {
			why = endExpired
		} else if e := unixNano(id.Expires); e != g.expires {
			// A session that Better Auth (or another service) extended
			// lives on; one that was shortened ends sooner.
			g.expires = e
			heap.Fix(&s.queue, g.index)
			s.armLocked(now.UnixNano())
		}
	case err == nil && id != nil:
		why = endRevoked // the credential now stands for another session
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrInternal):
	case errors.Is(err, ErrInvalidCredentials), errors.Is(err, ErrNoCredentials):
		why = endRevoked
	}
	var ended []*liveConn
	if why != nil {
		ended = s.endGroupLocked(g, why)
	}
	n := g.n
	s.mu.Unlock()
	if why == nil && err != nil && s.m.logger != nil {
		s.m.logger.LogAttrs(context.Background(), slog.LevelWarn, "wsauth: revalidation could not decide; connections stay open",
			slog.String("subject", g.key.subject), slog.String("session", g.key.session),
			slog.Int("connections", n), slog.String("reason", redactedError(err)))
	}
	s.close(ended)
}

// keysChanged closes the connections of plugin keys that a Reload removed
// or replaced.
func (s *liveSet) keysChanged() {
	ks := s.m.keys.set.Load()
	var ended []*liveConn
	s.mu.Lock()
	for k, g := range s.plugins {
		if !ks.has(k.name, &k.sum) {
			ended = append(ended, s.endGroupLocked(g, endKeyRemoved)...)
		}
	}
	s.mu.Unlock()
	s.close(ended)
}

// groupQueue is a min-heap of session groups by their next event.
type groupQueue []*connGroup

func (q groupQueue) Len() int           { return len(q) }
func (q groupQueue) Less(i, j int) bool { return q[i].event() < q[j].event() }
func (q groupQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}

func (q *groupQueue) Push(x any) {
	g := x.(*connGroup)
	g.index = len(*q)
	*q = append(*q, g)
}

func (q *groupQueue) Pop() any {
	old := *q
	g := old[len(old)-1]
	old[len(old)-1] = nil
	g.index = -1
	*q = old[:len(old)-1]
	return g
}
