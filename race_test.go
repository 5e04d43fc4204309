//go:build race

package wsauth

// raceEnabled reports whether the tests run under the race detector, which
// changes how much memory every allocation takes.
const raceEnabled = true
