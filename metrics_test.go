package wsauth

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) Observe(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func TestObserver(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, Options{Observer: rec, InsecureTrustLoopback: true, Throttle: ThrottleOptions{MaxFailures: 2}})
	for _, header := range [][]string{
		{PluginTokenHeader, testKey},
		{"Cookie", testCookie + "=good-alice"},
		{"Cookie", testCookie + "=down"},
		{"Cookie", testCookie + "=panic"},
		{"Cookie", testCookie + "=good-alice", "Origin", "https://evil.example"},
		{},
		{PluginTokenHeader, "wrong"},
		{PluginTokenHeader, testKey, PluginTokenHeader, testKey},
		{PluginTokenHeader, testKey},
		{"Cookie", testCookie + "=good-alice"},
	} {
		h.dial(t, "", hdr(header...))
	}
	type got struct {
		Method    string
		Outcome   Outcome
		Validated bool
	}
	var events []got
	for _, e := range rec.events {
		events = append(events, got{e.Method, e.Outcome, e.ValidatorLatency > 0})
	}
	assert.Equal(t, []got{
		{MethodPlugin, OutcomeAccepted, false},
		{MethodSession, OutcomeAccepted, true},
		{MethodSession, OutcomeUnavailable, true},
		{MethodSession, OutcomeInternal, true},
		{MethodSession, OutcomeForbidden, false},
		{MethodLoopback, OutcomeAccepted, false},
		{MethodPlugin, OutcomeInvalid, false},
		{MethodPlugin, OutcomeAmbiguous, false},
		{MethodPlugin, OutcomeThrottled, false},
		{MethodSession, OutcomeThrottled, false},
	}, events)
}

func TestObserverSeesValidatorLatency(t *testing.T) {
	var latency atomic.Int64
	h := newHarness(t, Options{
		Observer:         ObserverFunc(func(e Event) { latency.Store(int64(e.ValidatorLatency)) }),
		ValidatorTimeout: 50 * time.Millisecond,
	})
	h.dial(t, "", hdr("Cookie", testCookie+"=slow"))
	assert.GreaterOrEqual(t, time.Duration(latency.Load()), 50*time.Millisecond)
}

// TestObserverCostsNoAllocation: an observer adds no allocation to a
// decision, and none is made when there is no observer.
func TestObserverCostsNoAllocation(t *testing.T) {
	var n atomic.Int64
	m, err := New(Options{PluginKeys: mustKeys(t)})
	require.NoError(t, err)
	r := newRequest(PluginTokenHeader, testKey)
	without := testing.AllocsPerRun(200, func() { _, _ = m.Authenticate(r) })
	m.observer = ObserverFunc(func(Event) { n.Add(1) })
	with := testing.AllocsPerRun(200, func() { _, _ = m.Authenticate(r) })
	assert.Equal(t, without, with)
	assert.Positive(t, n.Load())
}

func TestOutcomeOf(t *testing.T) {
	for err, want := range map[error]Outcome{
		nil:                            OutcomeAccepted,
		ErrNoCredentials:               OutcomeNoCredentials,
		ErrInvalidCredentials:          OutcomeInvalid,
		ErrAmbiguousCredentials:        OutcomeAmbiguous,
		ErrForbiddenOrigin:             OutcomeForbidden,
		ErrInternal:                    OutcomeInternal,
		errors.New("other"):            OutcomeInternal,
		&RetryError{Err: ErrThrottled}: OutcomeThrottled,
		&RetryError{Err: fmt.Errorf("%w: x", ErrUnavailable)}:    OutcomeUnavailable,
		fmt.Errorf("%w: panicked", ErrInternal):                  OutcomeInternal,
		fmt.Errorf("wrapped: %w", ErrInvalidCredentials):         OutcomeInvalid,
		fmt.Errorf("%w: %w", ErrUnavailable, errors.New("down")): OutcomeUnavailable,
	} {
		assert.Equal(t, want, OutcomeOf(err), "%v", err)
	}
}
