package wsauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults for [BetterAuthOptions] fields left at their zero value.
const (
	DefaultBetterAuthPath         = "/api/auth/get-session"
	DefaultBetterAuthCookiePrefix = "better-auth"
	DefaultBetterAuthTimeout      = 3 * time.Second
	DefaultBetterAuthMaxBodyBytes = 64 << 10
)

// maxUpstreamRetryAfter bounds the Retry-After of the auth service that the
// validator passes on, so that a confused or hostile answer cannot tell
// every client to stay away for days.
const maxUpstreamRetryAfter = 5 * time.Minute

// BetterAuthOptions configures the validator made by [NewBetterAuth].
type BetterAuthOptions struct {
	// BaseURL is where the Better Auth server is reached, such as
	// "https://auth.example.com" (the same base URL Better Auth itself is
	// configured with). It is required, must be http or https, and must
	// not carry a user name, password, query or fragment.
	BaseURL string

	// Path is the get-session endpoint below BaseURL. Default:
	// [DefaultBetterAuthPath].
	Path string

	// CookiePrefix is Better Auth's advanced.cookiePrefix. The session
	// cookie is then "<prefix>.session_token", or
	// "__Secure-<prefix>.session_token" when Better Auth serves https;
	// both names are accepted. Like a cookie name, it must be a token:
	// letters, digits and !#$%&'*+-.^_`|~ (a browser's cookie with any
	// other character in its name never reaches the validator). Default:
	// [DefaultBetterAuthCookiePrefix].
	CookiePrefix string

	// Secrets turns on the offline pre-check: a session cookie whose
	// signature (HMAC-SHA256 of the token) verifies under none of these
	// secrets is dropped, never forwarded, and a request whose session
	// cookies are all dropped, and that carries no bearer token, is
	// refused without asking the auth service. One forged cookie does not
	// refuse a request that also carries a genuine one, so that a cookie
	// planted by a sibling subdomain cannot lock a user out. Give
	// BETTER_AUTH_SECRET, and during a rotation the old secrets after it.
	// A wrong secret refuses every session, so set it only from the same
	// source Better Auth reads. Default: none, every cookie is checked by
	// the auth service alone.
	Secrets []string

	// Timeout bounds one call of the get-session endpoint; a slower
	// answer means "could not decide" (503). Default:
	// [DefaultBetterAuthTimeout].
	Timeout time.Duration

	// MaxBodyBytes bounds the get-session answer that is read; a longer
	// body means "could not decide". Default:
	// [DefaultBetterAuthMaxBodyBytes].
	MaxBodyBytes int64

	// Client sends the get-session requests. It is copied, and the copy
	// never follows redirects, so that a session cookie is sent nowhere
	// but Path, and has no cookie jar, so that a cookie the auth service
	// sets in its answer for one user is never sent with another user's
	// check. Default: a client of its own with the standard transport
	// settings.
	Client *http.Client
}

// betterAuth is the validator returned by NewBetterAuth.
type betterAuth struct {
	endpoint    string
	cookieNames [2]string
	secrets     [][]byte
	timeout     time.Duration
	maxBody     int64
	client      *http.Client
}

// NewBetterAuth returns a [SessionValidator] that asks a Better Auth server
// who a request's session belongs to, with
// GET {BaseURL}{Path}?disableRefresh=true&disableCookieCache=true, so that
// a check neither extends nor rotates the session, and is answered from the
// session store rather than from a signed cookie cache that would hide a
// sign-out.
//
// Only the session cookie (by its plain and its "__Secure-" name) and an
// "Authorization: Bearer" header (Better Auth's bearer plugin) are
// forwarded; other cookies and X-Plugin-Token never are. A request that
// carries neither gives [ErrNoCredentials] without a call. The answers
// map to the three outcomes of [SessionValidator]:
//
//   - 200 with a session and a user: a user identity whose Subject is the
//     user's id, Name the user's name (its id if empty), SessionID the
//     session's id (never its token) and Expires its expiresAt;
//   - 200 with the body null (Better Auth's answer for a forged, revoked or
//     expired session), 401 or 403: [ErrInvalidCredentials];
//   - anything else (5xx, 429, a redirect, a timeout, a refused connection,
//     a body that is too long or is not a session): an error wrapping
//     [ErrUnavailable], carrying the server's Retry-After if it sent one
//     in seconds, at most five minutes.
//
// It fails if BaseURL is missing or malformed, CookiePrefix is not a
// token, a secret is empty, or a duration or size is negative. The validator is safe for concurrent use.
// Wrap it in [NewSessionCache] so that every handshake does not reach the
// auth service.
func NewBetterAuth(opts BetterAuthOptions) (SessionValidator, error) {
	u, err := url.Parse(strings.TrimSpace(opts.BaseURL))
	switch {
	case opts.BaseURL == "":
		return nil, errors.New("wsauth: Better Auth: BaseURL is required")
	case err != nil:
		return nil, errors.New("wsauth: Better Auth: BaseURL is not a URL")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return nil, errors.New("wsauth: Better Auth: BaseURL must be an http or https URL with a host")
	case u.User != nil:
		return nil, errors.New("wsauth: Better Auth: BaseURL must not carry a user name or password")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, errors.New("wsauth: Better Auth: BaseURL must not carry a query or fragment")
	}
	if opts.Timeout < 0 || opts.MaxBodyBytes < 0 {
		return nil, errors.New("wsauth: Better Auth: Timeout and MaxBodyBytes must not be negative")
	}
	path := opts.Path
	if path == "" {
		path = DefaultBetterAuthPath
	}
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("wsauth: Better Auth: Path %q must start with '/' and carry no query", path)
	}
	prefix := opts.CookiePrefix
	if prefix == "" {
		prefix = DefaultBetterAuthCookiePrefix
	}
	if !isToken(prefix) {
		return nil, fmt.Errorf("wsauth: Better Auth: CookiePrefix %q cannot begin a cookie name", prefix)
	}
	b := &betterAuth{
		endpoint:    strings.TrimRight(u.String(), "/") + path + "?disableRefresh=true&disableCookieCache=true",
		cookieNames: [2]string{prefix + ".session_token", "__Secure-" + prefix + ".session_token"},
		timeout:     opts.Timeout,
		maxBody:     opts.MaxBodyBytes,
	}
	for i, s := range opts.Secrets {
		if s == "" {
			return nil, fmt.Errorf("wsauth: Better Auth: secret %d is empty", i+1)
		}
		b.secrets = append(b.secrets, []byte(s))
	}
	if b.timeout == 0 {
		b.timeout = DefaultBetterAuthTimeout
	}
	if b.maxBody == 0 {
		b.maxBody = DefaultBetterAuthMaxBodyBytes
	}
	if opts.Client != nil {
		c := *opts.Client
		c.Jar = nil
		b.client = &c
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32
		b.client = &http.Client{Transport: t}
	}
	b.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return b, nil
}

// ValidateSession implements [SessionValidator].
func (b *betterAuth) ValidateSession(ctx context.Context, r *http.Request) (*Identity, error) {
	var cookies []string
	forged := false
	b.eachSessionCookie(r, func(name, value string) {
		if b.secrets != nil && !b.signatureValid(value) {
			forged = true
			return
		}
		cookies = append(cookies, name+"="+value)
	})
	bearer := bearerOf(r)
	switch {
	case len(cookies) > 0 || bearer != "":
	case forged:
		return nil, fmt.Errorf("%w: session cookie signature does not verify", ErrInvalidCredentials)
	default:
		return nil, ErrNoCredentials
	}

	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.endpoint, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: Better Auth: %w", ErrUnavailable, err)
	}
	req.Header.Set("Accept", "application/json")
	if len(cookies) > 0 {
		req.Header.Set("Cookie", strings.Join(cookies, "; "))
	}
	if bearer != "" {
		req.Header.Set("Authorization", bearer)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		// A *url.Error names the endpoint, which holds no secret.
		return nil, fmt.Errorf("%w: Better Auth get-session: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%w: Better Auth get-session answered %d", ErrInvalidCredentials, resp.StatusCode)
	default:
		err := fmt.Errorf("%w: Better Auth get-session answered %d", ErrUnavailable, resp.StatusCode)
		if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
			after := maxUpstreamRetryAfter
			if s < int(maxUpstreamRetryAfter/time.Second) {
				after = time.Duration(s) * time.Second
			}
			return nil, &RetryError{Err: err, After: after}
		}
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, b.maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: Better Auth get-session: reading the answer: %w", ErrUnavailable, err)
	}
	if int64(len(body)) > b.maxBody {
		return nil, fmt.Errorf("%w: Better Auth get-session answered more than %d bytes", ErrUnavailable, b.maxBody)
	}
	return parseGetSession(body, time.Now())
}

// maxCookies is the number of cookies above which net/http reads none of a
// request's (its default httpcookiemaxnum).
const maxCookies = 3000

// eachSessionCookie calls f with the name and value of each of r's session
// cookies that has a value, in the order they were sent. It reads the
// Cookie header as net/http's Request.CookiesNamed does (parts separated
// by ';', spaces around them trimmed, a value in double quotes unquoted,
// a value with a byte a cookie may not carry skipped, no cookie at all
// from a request with more than 3000), but allocates nothing, so that the
// session cache can key a request by it on every handshake.
func (b *betterAuth) eachSessionCookie(r *http.Request, f func(name, value string)) {
	lines := r.Header["Cookie"]
	n := 0
	for _, line := range lines {
		n += strings.Count(line, ";") + 1
	}
	if n > maxCookies {
		return
	}
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			name, value, _ := strings.Cut(textproto.TrimString(part), "=")
			name = textproto.TrimString(name)
			if name != b.cookieNames[0] && name != b.cookieNames[1] {
				continue
			}
			if value, ok := cookieValue(value); ok && value != "" {
				f(name, value)
			}
		}
	}
}

// cookieValue unquotes a cookie's value and reports whether it is one that
// net/http accepts.
func cookieValue(v string) (string, bool) {
	if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= 0x7f || c == '"' || c == ';' || c == '\\' {
			return "", false
		}
	}
	return v, true
}

// bearerOf returns r's Authorization header if it is the only one and
// carries a bearer token (Better Auth's bearer plugin), and "" otherwise.
func bearerOf(r *http.Request) string {
	auth := r.Header["Authorization"]
	if len(auth) != 1 {
		return ""
	}
	if scheme, token, ok := strings.Cut(auth[0], " "); ok && strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(token) != "" {
		return auth[0]
	}
	return ""
}

// appendCredential implements credentialReader: the credential is what
// ValidateSession reads of r, its session cookies and its bearer token.
// Other cookies are not part of it, so that a user whose other cookies
// change still hits the session cache.
func (b *betterAuth) appendCredential(buf []byte, r *http.Request) ([]byte, bool) {
	ok := false
	b.eachSessionCookie(r, func(name, value string) {
		buf, ok = appendCredentialPart(buf, 'c', name, "=", value), true
	})
	if bearer := bearerOf(r); bearer != "" {
		buf, ok = appendCredentialPart(buf, 'b', bearer), true
	}
	return buf, ok
}

// credentialHeader implements credentialReader: a header that carries r's
// session cookies and bearer token, and no other cookie.
func (b *betterAuth) credentialHeader(r *http.Request) http.Header {
	h := make(http.Header, 2)
	var cookies []string
	b.eachSessionCookie(r, func(name, value string) {
		cookies = append(cookies, name+"="+value)
	})
	if len(cookies) > 0 {
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if bearer := bearerOf(r); bearer != "" {
		h["Authorization"] = []string{strings.Clone(bearer)}
	}
	return h
}

// getSessionAnswer is the part of get-session's answer that is used. The
// session token in it is deliberately not decoded.
type getSessionAnswer struct {
	Session *struct {
		ID        string     `json:"id"`
		UserID    string     `json:"userId"`
		ExpiresAt *time.Time `json:"expiresAt"`
	} `json:"session"`
	User *struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"user"`
}

// parseGetSession turns a 200 answer of get-session into an identity. The
// errors never quote the body: it holds the session token.
func parseGetSession(body []byte, now time.Time) (*Identity, error) {
	body = []byte(strings.TrimSpace(string(body)))
	if string(body) == "null" {
		return nil, fmt.Errorf("%w: Better Auth knows no such session", ErrInvalidCredentials)
	}
	var a getSessionAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("%w: Better Auth get-session answered something that is not JSON", ErrUnavailable)
	}
	switch {
	case a.Session == nil || a.User == nil:
		return nil, fmt.Errorf("%w: Better Auth get-session answered without a session or user", ErrUnavailable)
	case a.Session.ID == "" || a.User.ID == "" || a.Session.ExpiresAt == nil:
		return nil, fmt.Errorf("%w: Better Auth get-session answered a session without id, user id or expiry", ErrUnavailable)
	case a.Session.UserID != "" && a.Session.UserID != a.User.ID:
		return nil, fmt.Errorf("%w: Better Auth get-session answered a session of another user", ErrUnavailable)
	case !now.Before(*a.Session.ExpiresAt):
		return nil, fmt.Errorf("%w: session expired", ErrInvalidCredentials)
	}
	name := a.User.Name
	if name == "" {
		name = a.User.ID
	}
	return &Identity{
		Kind:      KindUser,
		Subject:   a.User.ID,
		Name:      name,
		SessionID: a.Session.ID,
		Expires:   *a.Session.ExpiresAt,
	}, nil
}

// signatureValid reports whether a session cookie value, URL-encoded
// "TOKEN.SIG", carries SIG = base64(HMAC-SHA256(secret, TOKEN)) for one of
// the configured secrets. Every secret is tried.
func (b *betterAuth) signatureValid(value string) bool {
	// PathUnescape, not QueryUnescape: Better Auth also accepts the value
	// unencoded, and then a '+' of the signature is a '+', not a space.
	v, err := url.PathUnescape(value)
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(v, '.')
	if i <= 0 {
		return false
	}
	token, sig := v[:i], v[i+1:]
	got, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	ok := false
	for _, s := range b.secrets {
		mac := hmac.New(sha256.New, s)
		mac.Write([]byte(token))
		ok = hmac.Equal(got, mac.Sum(nil)) || ok
	}
	return ok
}

// isToken reports whether s is a token of RFC 9110 (section 5.6.2), as the
// name of a cookie must be.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
