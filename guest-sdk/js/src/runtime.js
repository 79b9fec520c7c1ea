// The bridge between the WIT `handle` export and a function module's handlers (guest-sdk/js/README.md).
// `handle` never throws: every failure becomes an ABI v1 result document (guest-sdk/ABI.md §5).
import { decode, encode } from "./cbor.js";
import { env, log } from "./host.js";
import { Headers, Request, Response } from "./web.js";

export const TRIGGERS = {
  "viewer-request": "viewerRequest",
  "origin-request": "originRequest",
  "origin-response": "originResponse",
  "viewer-response": "viewerResponse",
};
const REQUEST_TRIGGERS = new Set(["viewer-request", "origin-request"]);

// encoded now, at build time, so that reporting an exhausted memory needs no allocation
const OUT_OF_MEMORY = encode({ errorType: "OutOfMemory", errorMessage: "out of memory: the function ran out of memory (manifest key 'memory_mb')" });

class UsageError extends Error {
  constructor(message) { super(message); this.name = "EdgefnUsageError"; }
}

function requestFrom(doc, config) {
  const host = doc.headers && doc.headers.host ? doc.headers.host[0].value : config.distributionDomainName || "localhost";
  const url = `https://${host}${doc.uri}${doc.querystring ? "?" + doc.querystring : ""}`;
  const request = new Request(url, { method: doc.method, headers: Headers._fromDocument(doc.headers) });
  request._body = doc.body ? doc.body.data : null;
  request._origin = { doc, url: request.url, body: request._body };
  request.clientIp = doc.clientIp;
  request.origin = doc.origin;
  return request;
}

function responseFrom(doc) {
  const response = new Response(null, { status: doc.status, statusText: doc.statusDescription, headers: Headers._fromDocument(doc.headers) });
  response._body = doc.body ? doc.body.data : null;
  response._origin = { doc, body: response._body };
  return response;
}

function sameJson(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

function requestResult(request) {
  const url = new URL(request.url);
  const out = { method: request.method, uri: url.pathname, querystring: url.search.slice(1), headers: request.headers._document() };
  const origin = request._origin;
  if (origin ? request._body !== origin.body : request._body) out.body = { action: "replace", data: request._body || new Uint8Array(0) };
  if (origin && request.origin !== undefined && !sameJson(request.origin, origin.doc.origin)) out.origin = request.origin;
  return out;
}

function responseResult(response) {
  const origin = response._origin;
  if (!origin) {
    const out = { status: response.status, statusDescription: response.statusText, headers: response.headers._document() };
    if (response._body) out.body = response._body;
    return out;
  }
  const doc = origin.doc;
  const out = { status: response.status };
  if (response.status !== doc.status || response.statusText !== (doc.statusDescription || "")) out.statusDescription = response.statusText;
  const headers = response.headers._document();
  if (!sameJson(headers, doc.headers || {})) out.headers = headers;
  if (response._body !== origin.body) out.body = response._body || new Uint8Array(0);
  return out;
}

function resultOf(out, trigger, request, response) {
  if (REQUEST_TRIGGERS.has(trigger)) {
    if (out === undefined || out === null) return {};  // continue with the request unchanged
    if (out instanceof Response) return responseResult(out);
    if (out instanceof Request) return out === request && requestUnchanged(out) ? {} : requestResult(out);
    throw new UsageError(`a ${trigger} handler returns a Request, a Response or nothing, not ${describe(out)}`);
  }
  if (out === undefined || out === null) return { status: response.status };  // keep the response as it came
  if (out instanceof Response) return responseResult(out);
  throw new UsageError(`a ${trigger} handler returns a Response or nothing, not ${describe(out)}`);
}

function requestUnchanged(request) {
  const origin = request._origin;
  return request.url === origin.url && request.method === origin.doc.method && request._body === origin.body
    && sameJson(request.headers._document(), origin.doc.headers || {}) && sameJson(request.origin, origin.doc.origin);
}

const describe = (v) => (v === null ? "null" : typeof v === "object" ? (v.constructor && v.constructor.name) || "an object" : typeof v);

function error(type, message) { return encode({ errorType: String(type), errorMessage: String(message).slice(0, 4000) }); }

function isOutOfMemory(e) { return e instanceof Error && e.name === "InternalError" && /out of memory/.test(e.message); }

/** The `handle` export for `module`: its trigger-named exports, else a Worker-style `default.fetch`. */
export function bind(module) {
  const handlers = {};
  for (const [trigger, name] of Object.entries(TRIGGERS)) if (typeof module[name] === "function") handlers[trigger] = module[name];
  const worker = module.default && typeof module.default.fetch === "function" ? module.default : null;
  if (!worker && Object.keys(handlers).length === 0) {
    throw new UsageError("the module exports no handler: export viewerRequest, originRequest, originResponse, viewerResponse, "
      + "or a default object with fetch(request, env, ctx)");
  }
  prepare();
  return function handle(raw) {
    try {
      return dispatch(raw, handlers, worker);
    } catch (e) {
      if (isOutOfMemory(e)) return OUT_OF_MEMORY;
      try {
        log("error", e instanceof Error ? (e.stack ? `${e.name}: ${e.message}\n${e.stack}`.trimEnd() : `${e.name}: ${e.message}`) : `uncaught: ${String(e)}`);
        return error(e instanceof Error ? e.name : "Error", e instanceof Error ? e.message || e.name : String(e));
      } catch (again) {
        return OUT_OF_MEMORY;
      }
    }
  };
}

// Run the SDK's own event and result code (never the function's) once at build time, so that what the engine
// creates on first use (shapes, atoms, compiled regular expressions) is in the snapshot, not paid per instance.
function prepare() {
  const headers = { host: [{ key: "Host", value: "example.test" }], accept: [{ key: "Accept", value: "*/*" }] };
  const sample = encode({
    config: { eventType: "origin-response", requestId: "warm-up", distributionDomainName: "", distributionId: "", functionName: "" },
    request: { clientIp: "127.0.0.1", method: "GET", uri: "/a/b", querystring: "a=1", headers, body: { data: new Uint8Array(1), inputTruncated: false } },
    response: { status: 200, statusDescription: "OK", headers },
  });
  const touch = (r) => { r.headers.set("x-warm", "1"); return r; };
  for (let i = 0; i < 4; i++) {
    dispatch(sample, { "origin-response": (res) => touch(res), "origin-request": (req) => touch(req) }, null);
    const doc = decode(sample);
    doc.config.eventType = "origin-request";
    dispatch(encode(doc), { "origin-request": (req) => touch(new Request(req.url, req)) }, null);
    dispatch(encode(doc), { "origin-request": () => Response.json({ a: [1, "b"] }, { status: 404 }) }, null);
  }
}

function dispatch(raw, handlers, worker) {
  let doc, request, response;
  try {
    doc = decode(raw instanceof Uint8Array ? raw : new Uint8Array(raw));
    if (!doc || typeof doc.request !== "object") throw new TypeError("the event must be a map with a 'request' map");
    request = requestFrom(doc.request, doc.config || {});
    response = doc.response ? responseFrom(doc.response) : undefined;
  } catch (e) {
    if (isOutOfMemory(e)) throw e;
    return error("InvalidEvent", e.message);
  }
  const config = doc.config || {};
  const trigger = config.eventType;
  const ctx = { eventType: trigger, requestId: config.requestId, functionName: config.functionName, clientIp: doc.request.clientIp };
  let out;
  if (handlers[trigger]) {
    out = REQUEST_TRIGGERS.has(trigger) ? handlers[trigger](request, ctx) : handlers[trigger](response, request, ctx);
  } else if (worker && REQUEST_TRIGGERS.has(trigger)) {
    out = worker.fetch(request, env, ctx);
  } else {
    const defined = Object.keys(handlers).map((t) => TRIGGERS[t]).join(", ") || (worker ? "default.fetch" : "none");
    return error("EdgefnUsageError", `this function has no ${TRIGGERS[trigger] || trigger} handler (defined: ${defined}); `
      + "check the manifest's trigger or export the handler");
  }
  const settled = Promise.__drain(Promise.resolve(out));
  if (settled.state === 2) throw settled.value;
  if (settled.state !== 1) {
    throw new UsageError("the handler's promise never settled: edgefn's fetch and kv complete within the call, "
      + "but nothing else (a timer, an event) ever resolves a promise here");
  }
  return encode(resultOf(settled.value, trigger, request, response));
}
