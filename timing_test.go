package wsauth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The timing test measures how long checking a wrong plugin key takes,
// for wrong keys of several kinds, and fails if any two kinds take
// measurably different times. Samples of all kinds are interleaved in a
// random order, so that noise from a busy machine falls on all of them
// alike; each sample times a batch of calls, long enough for the clock;
// the slowest fifth of each kind's samples (preemption, interrupts) is
// dropped; and two kinds differ only if Welch's t-test finds the
// difference significant (|t| > timingMaxT) AND it is large enough to
// matter (more than timingMaxRel of the time taken). TestTimingDetectsLeaks
// runs the same procedure against comparisons that do leak, to show that
// it would catch them.
//
// WSAUTH_TIMING_ROUNDS raises the number of samples per kind for a longer,
// more sensitive run (the default keeps CI under a minute):
//
//	WSAUTH_TIMING_ROUNDS=200000 go test -run 'Timing' -v .
const (
	timingRounds   = 6000
	timingKeep     = 0.8 // fraction of each kind's samples kept, fastest first
	timingMaxT     = 8.0
	timingMaxRel   = 0.05
	timingSampleNs = 5000 // target duration of one sample's batch
)

// timingKinds returns wrong keys of every kind that a leaky comparison
// would tell apart: no leading byte in common with the key, all but the
// last, shorter and longer.
//
// All fit in one SHA-256 block (up to 55 bytes). Hashing a longer guess
// takes longer, in 64-byte steps, and an empty one skips a copy (about 10
// ns): that depends on the guess alone and tells nothing about the keys,
// so it is left out of the comparison.
func timingKinds(key string, check func(string) int) []timingKind {
	differ := func(s string) string {
		b := []byte(s)
		for i := range b {
			b[i] ^= 0x01
		}
		return string(b)
	}
	n := len(key)
	var kinds []timingKind
	for _, k := range []struct{ name, token string }{
		{"same length, no byte in common", differ(key)},
		{"same length, first byte wrong", differ(key[:1]) + key[1:]},
		{"same length, last byte wrong", key[:n-1] + differ(key[n-1:])},
		{"the key minus its last byte", key[:n-1]},
		{"the key plus one byte", key + "x"},
		{"the key padded to 55 bytes", key + strings.Repeat("x", 55-n)},
		{"one byte", key[:1]},
	} {
		kinds = append(kinds, timingKind{k.name, func() int { return check(k.token) }})
	}
	return kinds
}

// timingKind is one kind of check to time.
type timingKind struct {
	name  string
	check func() int
}

type timingResult struct {
	kinds []string
	mean  []float64 // trimmed mean, ns per call
	worst struct {
		a, b   int
		t, rel float64
	}
}

// leaks reports whether two kinds take measurably different times.
func (r *timingResult) leaks() bool {
	return math.Abs(r.worst.t) > timingMaxT && r.worst.rel > timingMaxRel
}

func (r *timingResult) String() string {
	var b strings.Builder
	for i, k := range r.kinds {
		fmt.Fprintf(&b, "  %-32s %8.1f ns\n", k, r.mean[i])
	}
	fmt.Fprintf(&b, "  largest difference: %q vs %q: t = %.1f, %.1f%% (leak if |t| > %.0f and > %.0f%%)",
		r.kinds[r.worst.a], r.kinds[r.worst.b], r.worst.t, 100*r.worst.rel, timingMaxT, 100*timingMaxRel)
	return b.String()
}

// measureTiming times every kind of check and compares every pair.
func measureTiming(kinds []timingKind, rounds int) *timingResult {
	// Calibrate the batch so that one sample takes about timingSampleNs.
	batch := 1
	for {
		start := time.Now()
		for range batch {
			kinds[0].check()
		}
		if time.Since(start) > timingSampleNs*time.Nanosecond || batch > 1<<20 {
			break
		}
		batch *= 2
	}
	samples := make([][]float64, len(kinds))
	order := make([]int, len(kinds))
	for i := range order {
		order[i] = i
	}
	sink := 0
	for range rounds {
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			check := kinds[k].check
			start := time.Now()
			for range batch {
				sink += check()
			}
			samples[k] = append(samples[k], float64(time.Since(start).Nanoseconds())/float64(batch))
		}
	}
	_ = sink

	r := &timingResult{mean: make([]float64, len(kinds))}
	trimmed := make([][]float64, len(kinds))
	for i, s := range samples {
		r.kinds = append(r.kinds, kinds[i].name)
		slices.Sort(s)
		trimmed[i] = s[:int(float64(len(s))*timingKeep)]
		r.mean[i], _ = meanVar(trimmed[i])
	}
	r.worst.t = 0
	for a := range kinds {
		for b := a + 1; b < len(kinds); b++ {
			t := welchT(trimmed[a], trimmed[b])
			rel := math.Abs(r.mean[a]-r.mean[b]) / math.Max(r.mean[a], r.mean[b])
			// The pair that comes closest to being called a leak.
			if score := math.Min(math.Abs(t)/timingMaxT, rel/timingMaxRel); score > math.Min(math.Abs(r.worst.t)/timingMaxT, r.worst.rel/timingMaxRel) {
				r.worst.a, r.worst.b, r.worst.t, r.worst.rel = a, b, t, rel
			}
		}
	}
	return r
}

func meanVar(x []float64) (mean, variance float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	for _, v := range x {
		variance += (v - mean) * (v - mean)
	}
	return mean, variance / float64(len(x)-1)
}

// welchT is Welch's t statistic for the difference of two means.
func welchT(a, b []float64) float64 {
	ma, va := meanVar(a)
	mb, vb := meanVar(b)
	se := math.Sqrt(va/float64(len(a)) + vb/float64(len(b)))
	if se == 0 {
		return 0
	}
	return (ma - mb) / se
}

func timingRoundsFromEnv(t *testing.T) int {
	if v := os.Getenv("WSAUTH_TIMING_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			t.Fatalf("WSAUTH_TIMING_ROUNDS=%q: want a number of at least 100", v)
		}
		return n
	}
	return timingRounds
}

func skipTimingUnderRace(t *testing.T) {
	if raceEnabled {
		t.Skip("timing is measured without the race detector (.ci/run runs it on its own)")
	}
}

// TestTimingOfWrongKeys: checking a wrong key takes the same time however
// much of a real key it shares and whatever its length, with one key
// configured and with several; and the same wrong key takes the same time
// whatever the length of the configured key.
func TestTimingOfWrongKeys(t *testing.T) {
	skipTimingUnderRace(t)
	rounds := timingRoundsFromEnv(t)
	keySet := func(t *testing.T, keys ...PluginKey) *keySet {
		set, err := NewPluginKeys(keys...)
		if err != nil {
			t.Fatal(err)
		}
		return set.set.Load()
	}
	check := func(t *testing.T, kinds []timingKind) {
		r := measureTiming(kinds, rounds)
		t.Logf("%d rounds:\n%v", rounds, r)
		if r.leaks() {
			t.Errorf("the time to check a wrong key depends on the key:\n%v", r)
		}
	}
	t.Run("one key", func(t *testing.T) {
		check(t, timingKinds(testKey, keySet(t, PluginKey{Name: "telegram", Key: testKey}).match))
	})
	t.Run("three keys", func(t *testing.T) {
		ks := keySet(t, PluginKey{Name: "telegram", Key: testKey}, PluginKey{Name: "discord", Key: testKeyDiscord},
			PluginKey{Name: "slack", Key: strings.Repeat("s", 40)})
		check(t, timingKinds(testKey, ks.match))
	})
	t.Run("configured key length", func(t *testing.T) {
		var kinds []timingKind
		for _, n := range []int{MinKeyLength, len(testKey), 55, 200, maxKeyLength} {
			ks := keySet(t, PluginKey{Name: "telegram", Key: strings.Repeat("k", n)})
			kinds = append(kinds, timingKind{fmt.Sprintf("key of %d bytes", n), func() int { return ks.match(testKey) }})
		}
		check(t, kinds)
	})
}

// TestTimingDetectsLeaks runs the timing procedure against two classic
// mistakes, to show that it catches them: a byte-by-byte comparison that
// stops at the first difference (leaks how many leading bytes are right),
// and Go's == on strings (leaks whether the length is right).
func TestTimingDetectsLeaks(t *testing.T) {
	skipTimingUnderRace(t)
	rounds := timingRoundsFromEnv(t)
	leaky := map[string]func(string) int{
		"early exit": func(token string) int {
			if len(token) != len(testKey) {
				return -1
			}
			for i := 0; i < len(token); i++ {
				if token[i] != testKey[i] {
					return -1
				}
			}
			return 0
		},
		"==": func(token string) int {
			if token == testKey {
				return 0
			}
			return -1
		},
	}
	for name, check := range leaky {
		t.Run(name, func(t *testing.T) {
			r := measureTiming(timingKinds(testKey, check), rounds)
			t.Logf("%d rounds:\n%v", rounds, r)
			if !r.leaks() {
				t.Errorf("the timing test did not catch a leaky comparison:\n%v", r)
			}
		})
	}
}

// BenchmarkKeyMatch reports the time to check one wrong key of each kind.
func BenchmarkKeyMatch(b *testing.B) {
	set, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey}, PluginKey{Name: "discord", Key: testKeyDiscord})
	if err != nil {
		b.Fatal(err)
	}
	ks := set.set.Load()
	for _, k := range timingKinds(testKey, ks.match) {
		b.Run(k.name, func(b *testing.B) {
			for b.Loop() {
				k.check()
			}
		})
	}
}
