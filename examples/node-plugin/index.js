// An echo plugin for a wsauth gateway, in JavaScript with the ws package.
//
// It connects to GATEWAY_URL (default ws://127.0.0.1:8080/chat) with the key
// from PLUGIN_API_KEY in the X-Plugin-Token header, prints every message it
// receives, and answers messages from users (not from plugins, so that two
// echo bots do not answer each other for ever) with "echo: <text>".
//
//   npm ci && PLUGIN_API_KEY=... node index.js
//
// A refused key (401, or 400/403) stops it with a message and exit status 1,
// and so does a live connection closed with 4401 or 4403 (the key was
// removed): retrying cannot help until the key is fixed. Everything else (the
// gateway is down, answers 429 or 503, closes with 4503, 1001 or 1006) is
// retried with exponential backoff and jitter, and never sooner than a
// Retry-After the gateway sent. SIGINT or SIGTERM closes the connection and
// exits with status 0. The key is never printed.

import { STATUS_CODES } from "node:http";
import WebSocket from "ws";

const url = process.env.GATEWAY_URL || "ws://127.0.0.1:8080/chat";
const key = process.env.PLUGIN_API_KEY || "";
if (!key) {
  console.error("PLUGIN_API_KEY is not set");
  process.exit(1);
}

// Handshake statuses that retrying will not fix: the key is wrong.
const refusedKey = new Set([400, 401, 403]);
// Close codes that end the key's right to be connected.
const keyEnded = new Map([
  [4401, "the gateway no longer accepts the plugin key"],
  [4403, "the gateway does not allow this plugin"],
]);
// What the retried close codes mean, for the log.
const closeWords = new Map([
  [1000, "closed"],
  [1001, "gateway going away"],
  [1006, "connection lost"],
  [1011, "gateway error"],
  [4429, "too many attempts"],
  [4503, "auth service unavailable"],
]);

let attempt = 0; // failures since the last connection that lasted
let stopping = false;
let socket = null;
let timer = null;

function log(msg) {
  console.log(`${new Date().toISOString()} ${msg}`);
}

function stop(msg) {
  console.error(msg);
  process.exitCode = 1;
  stopping = true;
  clearTimeout(timer);
}

// backoff is exponential with jitter: up to min(30 s, 0.5 s × 2^attempt),
// plus 100 ms, so that plugins cut off together do not return together.
function backoff() {
  const ceiling = Math.min(30000, 500 * 2 ** Math.min(attempt++, 6));
  return 100 + Math.random() * ceiling;
}

// retryAfter reads a Retry-After header given in seconds, in milliseconds.
function retryAfter(value) {
  const s = Number.parseInt(value ?? "", 10);
  return Number.isFinite(s) && s > 0 ? s * 1000 : 0;
}

function connect() {
  if (stopping) return;
  const ws = new WebSocket(url, {
    headers: { "X-Plugin-Token": key },
    handshakeTimeout: 10000,
    maxPayload: 1 << 20,
  });
  socket = ws;
  let openedAt = 0;
  let refusal = null; // { status, wait } when the handshake was refused
  let lastError = null;

  ws.on("unexpected-response", (req, res) => {
    refusal = { status: res.statusCode, wait: retryAfter(res.headers["retry-after"]) };
    res.resume();
    ws.terminate(); // ends in "close" with 1006
  });
  ws.on("error", (err) => {
    lastError = err;
  });
  ws.on("open", () => {
    openedAt = Date.now();
    log(`connected to ${url}`);
  });
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    let m;
    try {
      m = JSON.parse(data.toString("utf8"));
    } catch {
      log("unreadable message");
      return;
    }
    const from = m.from ?? {};
    log(`${from.name} (${from.kind}): ${m.text}`);
    if (from.kind === "user" && typeof m.text === "string") {
      ws.send(`echo: ${m.text}`);
    }
  });
  ws.on("close", (code, reasonBuf) => {
    if (socket === ws) socket = null;
    if (stopping) return;
    const reason = reasonBuf.toString("utf8");
    if (refusal && refusedKey.has(refusal.status)) {
      stop(`the gateway refused the plugin key (${refusal.status} ${STATUS_CODES[refusal.status]}): check PLUGIN_API_KEY`);
      return;
    }
    if (keyEnded.has(code)) {
      stop(`disconnected (${code}${reason ? " " + reason : ""}): ${keyEnded.get(code)}; check PLUGIN_API_KEY`);
      return;
    }
    let why;
    if (refusal) {
      why = `the gateway answered ${refusal.status} ${STATUS_CODES[refusal.status] ?? ""}`.trim();
    } else if (!openedAt) {
      why = `cannot reach the gateway: ${lastError ? lastError.message : "connection failed"}`;
    } else {
      why = `disconnected (${code}${reason ? " " + reason : ""}): ${closeWords.get(code) ?? "closed"}`;
    }
    if (openedAt && Date.now() - openedAt > 10000) attempt = 0;
    const wait = Math.max(backoff(), refusal ? refusal.wait : 0);
    log(`${why}; retrying in ${(wait / 1000).toFixed(1)} s`);
    timer = setTimeout(connect, wait);
  });
}

function shutdown() {
  if (stopping) return;
  stopping = true;
  clearTimeout(timer);
  log("stopping");
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.close(1000, "plugin stopping");
    // Do not wait for ever for a gateway that does not answer the close.
    setTimeout(() => socket && socket.terminate(), 3000).unref();
  } else if (socket) {
    socket.terminate();
  }
}

process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);

connect();
