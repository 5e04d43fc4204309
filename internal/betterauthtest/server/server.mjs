// A real Better Auth server for Go integration tests (see ../betterauthtest.go).
//
// Configuration (environment):
//   BETTER_AUTH_SECRET  required; signs session cookies (HMAC-SHA256).
//   SESSION_EXPIRES_IN  optional; session lifetime in seconds (default: Better Auth's 7 days).
//   COOKIE_PREFIX       optional; advanced.cookiePrefix (default "better-auth").
//   TRUSTED_ORIGINS     optional; comma-separated extra trusted origins
//                       (the server's own origin is always trusted).
//   PORT                optional; default 0 (an ephemeral port).
//   EXIT_ON_STDIN_EOF   optional; "1" makes the server exit when its stdin
//                       closes, so it dies with the Go test process that
//                       holds the other end of the pipe.
//
// It listens on 127.0.0.1 only, its base URL is its own listening address, and
// it prints exactly one line "READY http://127.0.0.1:<port>" on stdout once it
// accepts connections. All other output (Better Auth's logs) goes to stderr.
// Storage is in memory: every start is a clean slate.
import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";

function fail(msg) {
  process.stderr.write(`betterauthtest server: ${msg}\n`);
  process.exit(2);
}

const secret = process.env.BETTER_AUTH_SECRET;
if (!secret) fail("BETTER_AUTH_SECRET is required");

let expiresIn;
if (process.env.SESSION_EXPIRES_IN) {
  expiresIn = Number(process.env.SESSION_EXPIRES_IN);
  if (!Number.isInteger(expiresIn) || expiresIn <= 0) {
    fail(`SESSION_EXPIRES_IN must be a positive integer number of seconds, got ${JSON.stringify(process.env.SESSION_EXPIRES_IN)}`);
  }
}

const cookiePrefix = process.env.COOKIE_PREFIX || undefined;
const extraOrigins = (process.env.TRUSTED_ORIGINS || "")
  .split(",")
  .map((s) => s.trim())
  .filter(Boolean);

let port = 0;
if (process.env.PORT) {
  port = Number(process.env.PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad PORT ${JSON.stringify(process.env.PORT)}`);
}

// The base URL must be the listening address, which is only known once the
// socket is bound; requests that arrive before the handler exists get 503.
let handler = null;
const server = http.createServer((req, res) => {
  if (!handler) {
    res.writeHead(503, { "content-type": "text/plain" });
    res.end("starting\n");
    return;
  }
  handler(req, res);
});

server.on("error", (err) => fail(`listen: ${err.message}`));

server.listen(port, "127.0.0.1", () => {
  const addr = server.address();
  const baseURL = `http://127.0.0.1:${addr.port}`;
  // memoryAdapter needs every table of the core schema to exist up front.
  const db = { user: [], session: [], account: [], verification: [] };
  const auth = betterAuth({
    baseURL,
    secret,
    database: memoryAdapter(db),
    emailAndPassword: { enabled: true },
    trustedOrigins: extraOrigins,
    session: {
      ...(expiresIn ? { expiresIn } : {}),
      // Off, so that get-session always consults the store and reflects
      // sign-out and expiry immediately.
      cookieCache: { enabled: false },
    },
    // Off: tests hammer the endpoints.
    rateLimit: { enabled: false },
    telemetry: { enabled: false },
    advanced: {
      ...(cookiePrefix ? { cookiePrefix } : {}),
      // Better Auth skips its Origin/CSRF check when NODE_ENV=test or TEST is
      // set; pin it on so the server behaves the same in every environment.
      disableOriginCheck: false,
      disableCSRFCheck: false,
    },
  });
  handler = toNodeHandler(auth);
  process.stdout.write(`READY ${baseURL}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
if (process.env.EXIT_ON_STDIN_EOF === "1") {
  process.stdin.on("end", shutdown);
  process.stdin.on("error", shutdown);
  process.stdin.resume();
}
process.on("SIGINT", shutdown);
