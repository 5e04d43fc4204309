package wsauth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func setEnv(t *testing.T, single, list, file string) {
	t.Helper()
	t.Setenv(EnvPluginKey, single)
	t.Setenv(EnvPluginKeys, list)
	t.Setenv(EnvPluginKeyFile, file)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestPluginKeysFromEnv(t *testing.T) {
	base64Key := "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
	cases := []struct {
		name               string
		single, list, file string // file: content; "" means unset
		want               []string
	}{
		{name: "nothing set", want: []string{}},
		{name: "PLUGIN_API_KEY", single: testKey, want: []string{"plugin"}},
		{name: "PLUGIN_API_KEY with surrounding whitespace", single: "  " + testKey + "\n", want: []string{"plugin"}},
		{name: "whitespace only is unset", single: "   ", want: []string{}},
		{name: "PLUGIN_API_KEYS", list: "telegram=" + testKey + ",discord=" + testKeyDiscord, want: []string{"telegram", "discord"}},
		{name: "PLUGIN_API_KEYS with spaces", list: " telegram = " + testKey + " , discord=" + testKeyDiscord + " ", want: []string{"telegram", "discord"}},
		{name: "PLUGIN_API_KEYS rotation labels", list: "telegram=" + testKey + ",telegram#next=" + testKeyDiscord, want: []string{"telegram", "telegram#next"}},
		{name: "PLUGIN_API_KEYS key with '='", list: "telegram=" + base64Key, want: []string{"telegram"}},
		{name: "file with one bare key", file: testKey + "\n", want: []string{"plugin"}},
		{name: "file with one base64 key", file: base64Key + "\n", want: []string{"plugin"}},
		{name: "file with named keys and comments", file: "# rotated 2026-12\ntelegram=" + testKey + "\n\ndiscord=" + testKeyDiscord + "\n", want: []string{"telegram", "discord"}},
		{name: "all three combined", single: testKey, list: "discord=" + testKeyDiscord, file: "slack=" + strings.Repeat("s", 40), want: []string{"plugin", "discord", "slack"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := ""
			if tc.file != "" {
				file = writeFile(t, tc.file)
			}
			setEnv(t, tc.single, tc.list, file)
			keys, err := PluginKeysFromEnv()
			require.NoError(t, err)
			assert.Equal(t, len(tc.want), keys.Len())
			assert.Equal(t, tc.want, append([]string{}, keys.Names()...))
		})
	}
}

func TestPluginKeysFromEnvErrors(t *testing.T) {
	short := "short-key"
	cases := []struct {
		name               string
		single, list, file string
		missingFile        bool
		wantErr            string
	}{
		{name: "short PLUGIN_API_KEY", single: short, wantErr: "shorter than 32"},
		{name: "key with a space inside", single: testKey[:20] + " " + testKey[20:], wantErr: "visible ASCII"},
		{name: "key with non-ASCII", single: testKey + "é", wantErr: "visible ASCII"},
		{name: "entry without '='", list: "telegram" + testKey, wantErr: `entry 1: want "name=KEY"`},
		{name: "stray comma", list: "telegram=" + testKey + ",", wantErr: "entry 2: empty entry"},
		{name: "empty name", list: "=" + testKey, wantErr: "plugin key name"},
		{name: "bad name", list: "tele gram=" + testKey, wantErr: "plugin key name"},
		{name: "bad label", list: "telegram#=" + testKey, wantErr: "label"},
		{name: "empty key", list: "telegram=", wantErr: "key is empty"},
		{name: "short named key", list: "telegram=" + short, wantErr: `"telegram": key is shorter`},
		{name: "duplicate name", list: "telegram=" + testKey + ",telegram=" + testKeyDiscord, wantErr: "configured twice"},
		{name: "duplicate key", list: "telegram=" + testKey + ",discord=" + testKey, wantErr: "are the same key"},
		{name: "duplicate across variables", single: testKey, list: "telegram=" + testKey, wantErr: "are the same key"},
		{name: "missing file", missingFile: true, wantErr: "PLUGIN_API_KEY_FILE"},
		{name: "empty file", file: "\n# nothing\n", wantErr: "holds no key"},
		{name: "file with a short key", file: "telegram=" + short + "\ndiscord=" + testKeyDiscord, wantErr: "shorter than 32"},
		{name: "file with a malformed line", file: "telegram=" + testKey + "\n" + testKeyDiscord, wantErr: "key line 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := ""
			switch {
			case tc.missingFile:
				file = filepath.Join(t.TempDir(), "absent")
			case tc.file != "":
				file = writeFile(t, tc.file)
			}
			setEnv(t, tc.single, tc.list, file)
			keys, err := PluginKeysFromEnv()
			require.Error(t, err)
			assert.Nil(t, keys)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.True(t, strings.HasPrefix(err.Error(), "wsauth: "), err.Error())
			for _, secret := range []string{testKey, testKeyDiscord, short, testKey[:20]} {
				assert.NotContains(t, err.Error(), secret, "an error must never quote a key")
			}
		})
	}
}

func TestNewPluginKeys(t *testing.T) {
	keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey})
	require.NoError(t, err)
	assert.Equal(t, 1, keys.Len())
	assert.True(t, keys.Has("telegram"))
	assert.False(t, keys.Has("discord"))

	_, err = NewPluginKeys(PluginKey{Name: "telegram", Key: strings.Repeat("k", MinKeyLength-1)})
	assert.ErrorContains(t, err, "shorter")
	_, err = NewPluginKeys(PluginKey{Name: "telegram", Key: strings.Repeat("k", MinKeyLength)})
	assert.NoError(t, err, "exactly MinKeyLength is enough")
	_, err = NewPluginKeys(PluginKey{Name: strings.Repeat("n", 65), Key: testKey})
	assert.ErrorContains(t, err, "plugin key name")

	var nilKeys *PluginKeys
	assert.Zero(t, nilKeys.Len())
	assert.NoError(t, nilKeys.Reload())
}

func TestParsePluginKeys(t *testing.T) {
	keys, err := ParsePluginKeys("telegram=" + testKey + ",discord=" + testKeyDiscord)
	require.NoError(t, err)
	assert.Equal(t, []string{"telegram", "discord"}, keys.Names())
	_, err = ParsePluginKeys("telegram")
	assert.Error(t, err)
}

func TestKeyMatch(t *testing.T) {
	keys, err := NewPluginKeys(
		PluginKey{Name: "a", Key: testKey},
		PluginKey{Name: "b", Key: testKeyDiscord},
		PluginKey{Name: "c", Key: strings.Repeat("c", 32)},
	)
	require.NoError(t, err)
	ks := keys.set.Load()
	assert.Equal(t, 0, ks.match(testKey))
	assert.Equal(t, 1, ks.match(testKeyDiscord))
	assert.Equal(t, 2, ks.match(strings.Repeat("c", 32)))
	assert.Equal(t, -1, ks.match(""))
	assert.Equal(t, -1, ks.match(testKey+" "))
	assert.Equal(t, -1, ks.match(strings.Repeat("c", 31)))
}

func TestReload(t *testing.T) {
	path := writeFile(t, "telegram="+testKey+"\n")
	setEnv(t, "", "", path)
	keys, err := PluginKeysFromEnv()
	require.NoError(t, err)
	assert.Equal(t, []string{"telegram"}, keys.Names())

	require.NoError(t, os.WriteFile(path, []byte("telegram#next="+testKeyDiscord+"\n"), 0o600))
	require.NoError(t, keys.Reload())
	assert.Equal(t, []string{"telegram#next"}, keys.Names())
	assert.Equal(t, 0, keys.set.Load().match(testKeyDiscord))
	assert.Equal(t, -1, keys.set.Load().match(testKey), "a removed key no longer matches")

	// A broken file keeps the keys in force.
	require.NoError(t, os.WriteFile(path, []byte("telegram=short\n"), 0o600))
	err = keys.Reload()
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "short\n")
	assert.Equal(t, []string{"telegram#next"}, keys.Names())
	require.NoError(t, os.Remove(path))
	require.Error(t, keys.Reload())
	assert.Equal(t, []string{"telegram#next"}, keys.Names())
}

// TestPluginKeyCheckIsCheap bounds the allocations of a handshake's
// decision with a valid plugin key, with one key configured and with
// eight.
func TestPluginKeyCheckIsCheap(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes escape analysis and so the allocation count; CI runs this test without it")
	}
	for name, n := range map[string]int{"one key": 1, "eight keys": 8} {
		t.Run(name, func(t *testing.T) {
			m := benchMiddleware(t, benchKeys(t, n), nil, ThrottleOptions{})
			r := upgradeRequest(PluginTokenHeader, testKey)
			allocs := testing.AllocsPerRun(1000, func() {
				id, err := m.Authenticate(r)
				if err != nil || id.Name != "telegram" {
					t.Fatalf("Authenticate = %v, %v", id, err)
				}
			})
			assert.LessOrEqual(t, allocs, 3.0, "allocations per Authenticate with a plugin key")
			t.Logf("Authenticate with a plugin key, %s configured: %.0f allocation(s)", name, allocs)
		})
	}
}
