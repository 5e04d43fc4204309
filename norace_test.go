//go:build !race

package wsauth

// raceEnabled reports whether the tests run under the race detector.
const raceEnabled = false
