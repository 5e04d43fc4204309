package wsauth

import (
	"net/http"
	"strings"
)

// LoopbackPluginName is the plugin name of a client let in by
// [Options.InsecureTrustLoopback].
const LoopbackPluginName = "loopback"

// loopbackHeaders are request headers that a browser or a proxy adds, or
// that carry a credential, and that a local plugin does not send. Any of
// them means the request is not trusted as a loopback client: Origin is
// sent by every browser (a web page can make the browser open a WebSocket
// to 127.0.0.1), Cookie and Authorization belong to the session path, and
// the rest are added by reverse proxies, which make all the traffic they
// forward come from loopback.
var loopbackHeaders = []string{"Origin", "Cookie", "Authorization", "Forwarded", "Via", "X-Real-Ip"}

// loopbackHeaderPrefixes are prefixes of header names with the same
// effect: X-Forwarded-For and its kin, added by proxies, and the
// Sec-Fetch- metadata that browsers add to every request.
var loopbackHeaderPrefixes = []string{"X-Forwarded-", "Sec-Fetch-"}

// loopbackTrusted reports whether r may be let in by the trusted loopback
// rule: it is a WebSocket handshake, its connection comes from a loopback
// address (r.RemoteAddr only, never a forwarding header), and it carries
// none of the headers a browser or a proxy would add, nor a credential.
func loopbackTrusted(r *http.Request) bool {
	if !isWebSocketHandshake(r) {
		return false
	}
	for name := range r.Header {
		for _, p := range loopbackHeaderPrefixes {
			if len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) {
				return false
			}
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
