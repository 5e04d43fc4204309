package wsauth

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// PluginTokenHeader is the request header that carries a plugin key.
const PluginTokenHeader = "X-Plugin-Token"

// MinKeyLength is the shortest plugin key accepted, in bytes. A random key
// of 32 characters from a base64 or hex alphabet carries 128 bits or more.
const MinKeyLength = 32

// maxKeyLength bounds a configured key; an HTTP header is no place for more.
const maxKeyLength = 4096

// matchBuffer is the size of the stack buffer a token is hashed from.
const matchBuffer = 256

// DefaultPluginName is the name a key from PLUGIN_API_KEY is known by.
const DefaultPluginName = "plugin"

// Environment variables read by [PluginKeysFromEnv].
const (
	EnvPluginKey     = "PLUGIN_API_KEY"
	EnvPluginKeys    = "PLUGIN_API_KEYS"
	EnvPluginKeyFile = "PLUGIN_API_KEY_FILE"
)

// PluginKey is one configured plugin key.
type PluginKey struct {
	// Name is the plugin's name: letters, digits, '.', '_' and '-', at
	// most 64 characters, optionally followed by "#label" (for example
	// "telegram#2026-12"). The label lets two keys of one plugin be valid
	// side by side during a rotation: both authenticate as the plugin
	// named before the '#', and the full name is reported as
	// [Identity.KeyID].
	Name string
	// Key is the secret: at least [MinKeyLength] visible ASCII
	// characters, no spaces.
	Key string
}

// PluginKeys is a set of plugin keys that requests are checked against.
// It is safe for concurrent use. A set loaded from a file can be re-read
// with [PluginKeys.Reload] while requests are being checked.
type PluginKeys struct {
	set  atomic.Pointer[keySet]
	load func() ([]PluginKey, error) // nil: the set cannot be reloaded

	watchMu  sync.Mutex
	watchers map[*func()]struct{} // run after every successful Reload
}

// keySet is an immutable snapshot of the configured keys.
type keySet struct {
	digests [][sha256.Size]byte
	names   []string // full names, as configured
	plugins []string // names without the "#label"
}

// NewPluginKeys returns a set of the given keys. It fails if a name or key
// is malformed, a key is shorter than [MinKeyLength], or a name or key is
// given twice; the error names the entry, never the key. An empty list gives
// an empty set: the plugin path is off.
func NewPluginKeys(keys ...PluginKey) (*PluginKeys, error) {
	ks, err := newKeySet(keys)
	if err != nil {
		return nil, err
	}
	p := &PluginKeys{}
	p.set.Store(ks)
	return p, nil
}

// ParsePluginKeys parses a list of named keys in the form of PLUGIN_API_KEYS:
// "name=KEY,name=KEY". Spaces around entries are ignored; a key may contain
// '=' (the first '=' separates name and key). See [NewPluginKeys] for the
// rules a name and a key must follow.
func ParsePluginKeys(s string) (*PluginKeys, error) {
	keys, err := parseKeyList(s, EnvPluginKeys)
	if err != nil {
		return nil, err
	}
	return NewPluginKeys(keys...)
}

// PluginKeysFromEnv returns the plugin keys configured in the environment:
//
//   - PLUGIN_API_KEY: one key, known by the name "plugin";
//   - PLUGIN_API_KEYS: named keys, "telegram=KEY1,discord=KEY2";
//   - PLUGIN_API_KEY_FILE: the path of a file (a mounted secret) holding
//     either one key, or one "name=KEY" per line; blank lines and lines
//     starting with '#' are ignored.
//
// All that are set are combined. A variable that is unset or empty adds
// nothing; if none is set the set is empty and the plugin path is off. A
// malformed variable, an unreadable file, a short key, or a name or key
// given twice is an error that names the variable, never the key.
//
// A set read from a file can be re-read with [PluginKeys.Reload].
func PluginKeysFromEnv() (*PluginKeys, error) {
	single := strings.TrimSpace(os.Getenv(EnvPluginKey))
	list := os.Getenv(EnvPluginKeys)
	file := strings.TrimSpace(os.Getenv(EnvPluginKeyFile))
	load := func() ([]PluginKey, error) {
		var keys []PluginKey
		if single != "" {
			keys = append(keys, PluginKey{Name: DefaultPluginName, Key: single})
		}
		named, err := parseKeyList(list, EnvPluginKeys)
		if err != nil {
			return nil, err
		}
		keys = append(keys, named...)
		if file != "" {
			fromFile, err := readKeyFile(file)
			if err != nil {
				return nil, err
			}
			keys = append(keys, fromFile...)
		}
		return keys, nil
	}
	keys, err := load()
	if err != nil {
		return nil, err
	}
	p, err := NewPluginKeys(keys...)
	if err != nil {
		return nil, err
	}
	if file != "" {
		p.load = load
	}
	return p, nil
}

// Reload re-reads the keys from where [PluginKeysFromEnv] found them (the
// key file may have changed). If the new keys cannot be read or are not
// valid, Reload returns the error and keeps the keys it had. A set that was
// not read from a file cannot change; Reload then returns nil.
//
// After a successful reload, connections opened with [Middleware.Accept]
// by a plugin whose key was removed or replaced are closed with 4401; those
// of keys that are still configured stay open.
func (p *PluginKeys) Reload() error {
	if p == nil || p.load == nil {
		return nil
	}
	keys, err := p.load()
	if err != nil {
		return err
	}
	ks, err := newKeySet(keys)
	if err != nil {
		return err
	}
	p.set.Store(ks)
	p.watchMu.Lock()
	watchers := make([]func(), 0, len(p.watchers))
	for f := range p.watchers {
		watchers = append(watchers, *f)
	}
	p.watchMu.Unlock()
	for _, f := range watchers {
		f()
	}
	return nil
}

// watch makes f run after every successful Reload, until stop is called.
func (p *PluginKeys) watch(f func()) (stop func()) {
	p.watchMu.Lock()
	defer p.watchMu.Unlock()
	if p.watchers == nil {
		p.watchers = make(map[*func()]struct{})
	}
	key := &f
	p.watchers[key] = struct{}{}
	return func() {
		p.watchMu.Lock()
		delete(p.watchers, key)
		p.watchMu.Unlock()
	}
}

// has reports whether a key of the given full name and digest is
// configured.
func (ks *keySet) has(name string, sum *[sha256.Size]byte) bool {
	for i := range ks.names {
		if ks.names[i] == name && ks.digests[i] == *sum {
			return true
		}
	}
	return false
}

// digest returns the digest of the key with the given full name, or nil.
func (ks *keySet) digest(name string) *[sha256.Size]byte {
	for i := range ks.names {
		if ks.names[i] == name {
			return &ks.digests[i]
		}
	}
	return nil
}

// emptyKeys is the snapshot of a nil or zero PluginKeys.
var emptyKeys = &keySet{}

// snapshot returns the keys in force; a nil or zero set has none.
func (p *PluginKeys) snapshot() *keySet {
	if p == nil {
		return emptyKeys
	}
	if ks := p.set.Load(); ks != nil {
		return ks
	}
	return emptyKeys
}

// Len returns the number of configured keys.
func (p *PluginKeys) Len() int {
	return len(p.snapshot().digests)
}

// Names returns the full names of the configured keys, in configuration
// order. It never returns a key.
func (p *PluginKeys) Names() []string {
	return append([]string(nil), p.snapshot().names...)
}

// Has reports whether a key with the given full name is configured.
func (p *PluginKeys) Has(name string) bool {
	for _, n := range p.snapshot().names {
		if n == name {
			return true
		}
	}
	return false
}

// match checks token against every configured key in constant time: the
// token is hashed once, every digest is compared with crypto/subtle, and
// the loop never exits early, so neither the time taken nor the key's
// length tells which key matched or how close a guess came. It returns the
// index of the matching key, or -1.
//
// The token is copied into a buffer on the stack before it is hashed:
// converting it with []byte(token) would use the stack only for tokens of
// up to 32 bytes and allocate for longer ones, which makes a guess of a
// real key's length measurably slower than a short one. Only tokens
// longer than the buffer, far longer than any usual key, are copied to
// the heap. Hashing itself takes longer for a longer token, in 64-byte
// steps; that depends on the guess alone and says nothing about the keys.
func (ks *keySet) match(token string) int {
	var buf [matchBuffer]byte
	sum := sha256.Sum256(append(buf[:0], token...))
	found := -1
	for i := range ks.digests {
		eq := subtle.ConstantTimeCompare(sum[:], ks.digests[i][:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	return found
}

func newKeySet(keys []PluginKey) (*keySet, error) {
	ks := &keySet{
		digests: make([][sha256.Size]byte, 0, len(keys)),
		names:   make([]string, 0, len(keys)),
		plugins: make([]string, 0, len(keys)),
	}
	seenName := make(map[string]bool, len(keys))
	seenKey := make(map[[sha256.Size]byte]string, len(keys))
	for _, k := range keys {
		plugin, err := checkKeyName(k.Name)
		if err != nil {
			return nil, err
		}
		if err := checkKey(k.Key); err != nil {
			return nil, fmt.Errorf("wsauth: plugin key %q: %w", k.Name, err)
		}
		if seenName[k.Name] {
			return nil, fmt.Errorf("wsauth: plugin key name %q is configured twice", k.Name)
		}
		d := sha256.Sum256([]byte(k.Key))
		if other, dup := seenKey[d]; dup {
			return nil, fmt.Errorf("wsauth: plugin keys %q and %q are the same key", other, k.Name)
		}
		seenName[k.Name] = true
		seenKey[d] = k.Name
		ks.digests = append(ks.digests, d)
		ks.names = append(ks.names, k.Name)
		ks.plugins = append(ks.plugins, plugin)
	}
	return ks, nil
}

// checkKeyName validates a key's full name and returns the plugin name
// (the part before any "#label").
func checkKeyName(name string) (string, error) {
	plugin, label, hasLabel := strings.Cut(name, "#")
	if !validName(plugin) {
		return "", fmt.Errorf("wsauth: plugin key name %q: want 1 to 64 letters, digits, '.', '_' or '-'", name)
	}
	if hasLabel && !validName(label) {
		return "", fmt.Errorf("wsauth: plugin key name %q: the label after '#' must be 1 to 64 letters, digits, '.', '_' or '-'", name)
	}
	return plugin, nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// errShortKey and its siblings describe a bad key without quoting it.
var (
	errEmptyKey   = errors.New("key is empty")
	errShortKey   = fmt.Errorf("key is shorter than %d characters", MinKeyLength)
	errLongKey    = fmt.Errorf("key is longer than %d characters", maxKeyLength)
	errKeyCharset = errors.New("key may only contain visible ASCII characters (no spaces or control characters)")
)

func checkKey(key string) error {
	switch {
	case key == "":
		return errEmptyKey
	case len(key) < MinKeyLength:
		return errShortKey
	case len(key) > maxKeyLength:
		return errLongKey
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return errKeyCharset
		}
	}
	return nil
}

// parseKeyList parses "name=KEY,name=KEY". Errors name the source and the
// position of the entry, never its text (it may hold a key).
func parseKeyList(s, source string) ([]PluginKey, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var keys []PluginKey
	for i, entry := range strings.Split(s, ",") {
		k, err := parseEntry(entry)
		if err != nil {
			return nil, fmt.Errorf("wsauth: %s: entry %d: %w", source, i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func parseEntry(entry string) (PluginKey, error) {
	entry = strings.TrimSpace(entry)
	if entry == "" {
		return PluginKey{}, errors.New("empty entry (a stray comma?)")
	}
	name, key, ok := strings.Cut(entry, "=")
	if !ok {
		return PluginKey{}, errors.New(`want "name=KEY"`)
	}
	return PluginKey{Name: strings.TrimSpace(name), Key: strings.TrimSpace(key)}, nil
}

// readKeyFile reads a key file: one bare key, or "name=KEY" lines.
func readKeyFile(path string) ([]PluginKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// The *PathError names the file and the reason; it holds no content.
		return nil, fmt.Errorf("wsauth: %s: %w", EnvPluginKeyFile, err)
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(make([]byte, 0, 1024), 64*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("wsauth: %s: %s: line too long", EnvPluginKeyFile, path)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("wsauth: %s: %s holds no key", EnvPluginKeyFile, path)
	}
	// A file holding a single line that is not "name=KEY" is one bare key.
	// A bare key may itself contain '=' (base64 padding), so only a line
	// whose part before the first '=' is a valid name and whose part after
	// it is more than padding is read as "name=KEY".
	if len(lines) == 1 && !isNamedEntry(lines[0]) {
		return []PluginKey{{Name: DefaultPluginName, Key: lines[0]}}, nil
	}
	keys := make([]PluginKey, 0, len(lines))
	for i, line := range lines {
		k, err := parseEntry(line)
		if err != nil {
			return nil, fmt.Errorf("wsauth: %s: %s: key line %d: %w", EnvPluginKeyFile, path, i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func isNamedEntry(line string) bool {
	name, key, ok := strings.Cut(line, "=")
	if !ok || strings.Trim(key, "= ") == "" {
		return false
	}
	_, err := checkKeyName(strings.TrimSpace(name))
	return err == nil
}
