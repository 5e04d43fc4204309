package wsauth

import (
	"net/http"
	"strings"
)

// LoopbackPluginName is the plugin name of a client let in by
// [Options.InsecureTrustLoopback].
const LoopbackPluginName = "loopback"

// loopbackHeaders are request headers that a browser or a proxy adds and
// a local plugin does not. Any of them means the request is not trusted as
// a loopback client: Origin is sent by every browser (a web page can make
// the browser open a WebSocket to 127.0.0.1), Cookie belongs to the session
// path, and the rest are added by reverse proxies, which make all the
// traffic they forward come from loopback.
var loopbackHeaders = []string{"Origin", "Cookie", "Forwarded", "Via", "X-Real-Ip"}

// loopbackTrusted reports whether r may be let in by the trusted loopback
// rule: its connection comes from a loopback address (r.RemoteAddr only,
// never a forwarding header) and it carries none of the headers a browser
// or a proxy would add.
func loopbackTrusted(r *http.Request) bool {
	for name := range r.Header {
		if len(name) >= len("X-Forwarded-") && strings.EqualFold(name[:len("X-Forwarded-")], "X-Forwarded-") {
			return false
		}
		for _, h := range loopbackHeaders {
			if strings.EqualFold(name, h) {
				return false
			}
		}
	}
	addr := remoteAddr(r)
	return addr.IsValid() && addr.IsLoopback()
}

// decideLoopback gives a loopback client the plugin identity
// [LoopbackPluginName].
func decideLoopback() decision {
	return decision{
		method: MethodLoopback,
		reason: "trusted loopback client",
		id:     &Identity{Kind: KindPlugin, Subject: LoopbackPluginName, Name: LoopbackPluginName},
	}
}
