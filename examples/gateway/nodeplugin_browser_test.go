//go:build browser && nodeplugin

package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// What a newcomer does: run the gateway, sign in on its page, start the
// JavaScript plugin with the key, and see the plugin's echo on the page.
func TestBrowserChatWithNodePlugin(t *testing.T) {
	_, base := startGateway(t, "PLUGIN_API_KEY="+e2eKey)
	plugin := startNodePlugin(t, "GATEWAY_URL="+wsURL(base), "PLUGIN_API_KEY="+e2eKey)
	plugin.waitFor(t, "connected to ")
	ctx := newBrowser(t)

	signIn(t, ctx, base, "frank")
	say(t, ctx, "hi from the browser")
	waitJS(t, ctx, `[...document.querySelectorAll("#messages li")].length >= 2`)
	assert.Equal(t, []entry{
		{Who: "frank", Kind: "user", Text: "hi from the browser"},
		{Who: "plugin", Kind: "plugin", Text: "echo: hi from the browser"},
	}, messages(t, ctx))
	screenshot(t, ctx, "chat-node-plugin.png")
}
