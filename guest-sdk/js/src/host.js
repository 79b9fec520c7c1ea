// The host's imports (the edgefn:function world, guest-sdk/python/wit/edgefn.wit): log, env, fetch, kv.
import * as imported from "edgefn:function/host@1.0.0";
import { decode, encode } from "./cbor.js";
import { utf8Decode, utf8Encode } from "./text.js";
import { Headers, Request, Response, toBytes } from "./web.js";

// QuickJS (componentize-qjs) gives the interface as the module's default export, StarlingMonkey as named exports
const host = imported.default || imported;

const LEVELS = { debug: "debug", info: "info", log: "info", warn: "warn", error: "error" };

function show(value) {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.stack ? `${value.name}: ${value.message}\n${value.stack}`.trimEnd() : `${value.name}: ${value.message}`;
  try { return JSON.stringify(value) ?? String(value); } catch { return String(value); }
}

/** One line in the function's log stream (`edgefn logs`); level is debug, info, warn or error. */
export function log(level, ...parts) {
  const at = LEVELS[level] || "info";
  for (const line of parts.map(show).join(" ").split("\n")) host.log(at, line);  // one log line per line, as a traceback's
}

export const console = {
  debug: (...a) => log("debug", ...a),
  info: (...a) => log("info", ...a),
  log: (...a) => log("info", ...a),
  warn: (...a) => log("warn", ...a),
  error: (...a) => log("error", ...a),
  trace: (...a) => log("debug", ...a),
};

/** The function's environment: its manifest `env` and its secrets, read by name (nothing else is there). */
export const env = new Proxy({}, {
  get(_, name) { return typeof name === "string" ? host.envGet(name) ?? undefined : undefined; },
  has(_, name) { return typeof name === "string" && host.envGet(name) !== null; },
  set() { throw new TypeError("env is read-only: set variables in the manifest's env"); },
});

/** Outbound HTTP, to the manifest's `allowed_hosts` only; a refused or failed request rejects with a TypeError. */
export function fetch(input, init = {}) {
  try {
    const request = input instanceof Request && Object.keys(init).length === 0 ? input : new Request(input, init);
    const doc = { method: request.method, url: request.url, headers: request.headers._document() };
    if (request._body && request._body.length) doc.body = request._body;
    const answer = decode(toU8(host.fetch(encode(doc))));
    if (answer.error !== undefined) return Promise.reject(new TypeError(`fetch ${request.url}: ${answer.error}`));
    const response = new Response(answer.body && answer.body.length ? answer.body : null, {
      status: answer.status, headers: Headers._fromDocument(answer.headers),
    });
    response._url = request.url;
    return Promise.resolve(response);
  } catch (e) {
    return Promise.reject(e);
  }
}

const toU8 = (v) => (v instanceof Uint8Array ? v : new Uint8Array(v));
const keyBytes = (k) => (typeof k === "string" ? utf8Encode(k) : toBytes(k));

export class KvError extends Error {
  constructor(message) { super(message); this.name = "KvError"; }
}

class Namespace {
  constructor(name) { this.name = name; }
  _call(doc) {
    doc.namespace = this.name;
    const answer = decode(toU8(host.kv(encode(doc))));
    if (answer.error !== undefined) throw new KvError(answer.error);
    return answer;
  }
  /** The value of `key` as bytes, or null. */
  get(key) { const a = this._call({ op: "get", key: keyBytes(key) }); return a.found ? a.value : null; }
  /** The value of `key` as text, or null. */
  getText(key) { const v = this.get(key); return v === null ? null : utf8Decode(v); }
  /** Set `key` to `value`; `ttl` (whole seconds, at least 1) makes it expire. */
  put(key, value, options = {}) {
    const doc = { op: "put", key: keyBytes(key), value: keyBytes(value) };
    if (options.ttl !== undefined) doc.ttl = Math.trunc(options.ttl);
    this._call(doc);
  }
  /** Remove `key`; true if it had a value. */
  delete(key) { return Boolean(this._call({ op: "delete", key: keyBytes(key) }).deleted); }
  /** One page of keys (as text) starting with `prefix`, after `cursor`. */
  list(options = {}) {
    const doc = { op: "list", prefix: keyBytes(options.prefix || ""), limit: options.limit || 1000 };
    if (options.cursor) doc.cursor = options.cursor;
    const a = this._call(doc);
    return { keys: (a.keys || []).map((k) => utf8Decode(k)), cursor: a.cursor ?? null };
  }
}

/** The key-value store, to the namespaces the manifest grants (`kv = ["visits"]`). */
export const kv = { namespace: (name) => new Namespace(String(name)) };
