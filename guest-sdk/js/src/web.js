// The Web-standard shapes JS edge code is written against: Headers, URL, URLSearchParams, Request, Response.
import { utf8Decode, utf8Encode } from "./text.js";

const NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export class Headers {
  constructor(init) {
    this._list = [];  // [name as given, value], in order
    if (init instanceof Headers) for (const [k, v] of init._list) this._list.push([k, v]);
    else if (Array.isArray(init)) for (const [k, v] of init) this.append(k, v);
    else if (init && typeof init === "object") {
      const entries = typeof init[Symbol.iterator] === "function" ? init : Object.entries(init);
      for (const [k, v] of entries) this.append(k, v);
    }
  }
  static _check(name) {
    if (!NAME.test(name)) throw new TypeError(`Headers: invalid header name ${JSON.stringify(name)}`);
    return name;
  }
  append(name, value) { this._list.push([Headers._check(String(name)), String(value).trim()]); }
  set(name, value) {
    const lower = Headers._check(String(name)).toLowerCase();
    const at = this._list.findIndex(([k]) => k.toLowerCase() === lower);
    if (at < 0) return void this._list.push([String(name), String(value).trim()]);
    this._list[at][1] = String(value).trim();
    this._list = this._list.filter(([k], i) => i === at || k.toLowerCase() !== lower);
  }
  get(name) {
    const lower = String(name).toLowerCase();
    const values = this._list.filter(([k]) => k.toLowerCase() === lower).map(([, v]) => v);
    return values.length ? values.join(", ") : null;
  }
  getSetCookie() { return this._list.filter(([k]) => k.toLowerCase() === "set-cookie").map(([, v]) => v); }
  has(name) { const lower = String(name).toLowerCase(); return this._list.some(([k]) => k.toLowerCase() === lower); }
  delete(name) { const lower = String(name).toLowerCase(); this._list = this._list.filter(([k]) => k.toLowerCase() !== lower); }
  forEach(callback, thisArg) { for (const [k, v] of this) callback.call(thisArg, v, k, this); }
  *entries() {
    const names = [...new Set(this._list.map(([k]) => k.toLowerCase()))].sort();
    for (const name of names) {
      if (name === "set-cookie") for (const v of this.getSetCookie()) yield [name, v];
      else yield [name, this.get(name)];
    }
  }
  *keys() { for (const [k] of this.entries()) yield k; }
  *values() { for (const [, v] of this.entries()) yield v; }
  [Symbol.iterator]() { return this.entries(); }
  get [Symbol.toStringTag]() { return "Headers"; }

  // edgefn's header map (ABI §4): lowercase name -> [{key, value}], one entry per repeat
  static _fromDocument(doc) {
    const h = new Headers();
    for (const name of Object.keys(doc || {})) for (const entry of doc[name]) h._list.push([entry.key || name, entry.value]);
    return h;
  }
  _document() {
    const doc = {};
    for (const [k, v] of this._list) (doc[k.toLowerCase()] ||= []).push({ key: k, value: v });
    return doc;
  }
}

// --- URLSearchParams and URL ----------------------------------------------------------------------------

const formDecode = (s) => { try { return decodeURIComponent(s.replace(/\+/g, " ")); } catch { return s; } };
const formEncode = (s) => encodeURIComponent(s).replace(/%20/g, "+").replace(/[!'()~]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());

export class URLSearchParams {
  constructor(init = "") {
    this._list = [];
    this._url = null;
    if (init instanceof URLSearchParams) this._list = init._list.map(([k, v]) => [k, v]);
    else if (typeof init === "string") this._parse(init);
    else if (init && typeof init === "object") {
      const entries = typeof init[Symbol.iterator] === "function" ? init : Object.entries(init);
      for (const [k, v] of entries) this._list.push([String(k), String(v)]);
    }
  }
  _parse(s) {
    this._list = [];
    for (const part of (s.startsWith("?") ? s.slice(1) : s).split("&")) {
      if (!part) continue;
      const eq = part.indexOf("=");
      this._list.push(eq < 0 ? [formDecode(part), ""] : [formDecode(part.slice(0, eq)), formDecode(part.slice(eq + 1))]);
    }
  }
  _changed() { if (this._url) this._url._search = this._list.length ? "?" + this.toString() : ""; }
  get size() { return this._list.length; }
  append(k, v) { this._list.push([String(k), String(v)]); this._changed(); }
  delete(k, v) { this._list = this._list.filter(([a, b]) => a !== k || (v !== undefined && b !== String(v))); this._changed(); }
  get(k) { const e = this._list.find(([a]) => a === k); return e ? e[1] : null; }
  getAll(k) { return this._list.filter(([a]) => a === k).map(([, b]) => b); }
  has(k, v) { return this._list.some(([a, b]) => a === k && (v === undefined || b === String(v))); }
  set(k, v) {
    const at = this._list.findIndex(([a]) => a === k);
    if (at < 0) this._list.push([String(k), String(v)]);
    else { this._list[at][1] = String(v); this._list = this._list.filter(([a], i) => a !== k || i === at); }
    this._changed();
  }
  sort() { this._list.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)); this._changed(); }
  forEach(callback, thisArg) { for (const [k, v] of this._list) callback.call(thisArg, v, k, this); }
  *entries() { for (const [k, v] of this._list) yield [k, v]; }
  *keys() { for (const [k] of this._list) yield k; }
  *values() { for (const [, v] of this._list) yield v; }
  [Symbol.iterator]() { return this.entries(); }
  toString() { return this._list.map(([k, v]) => formEncode(k) + "=" + formEncode(v)).join("&"); }
}

const DEFAULT_PORTS = { "http:": "80", "https:": "443", "ws:": "80", "wss:": "443" };
const ABSOLUTE = /^([a-zA-Z][a-zA-Z0-9+.-]*):(.*)$/s;

function normalizePath(path) {
  const out = [];
  const parts = path.split("/");
  for (let i = 0; i < parts.length; i++) {
    const seg = parts[i];
    if (seg === "..") { if (out.length > 1) out.pop(); if (i === parts.length - 1) out.push(""); }
    else if (seg === ".") { if (i === parts.length - 1) out.push(""); }
    else out.push(seg);
  }
  const joined = out.join("/");
  return joined.startsWith("/") ? joined : "/" + joined;
}

const encodePath = (p) => p.replace(/[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]/g, (c) => encodeURIComponent(c));
const encodeQuery = (q) => q.replace(/[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]/g, (c) => encodeURIComponent(c));

export class URL {
  constructor(input, base) {
    input = String(input).trim();
    const m = ABSOLUTE.exec(input);
    if (m) this._parseAbsolute(m[1].toLowerCase() + ":", m[2]);
    else {
      if (base === undefined) throw new TypeError(`Invalid URL: ${input}`);
      const b = base instanceof URL ? base : new URL(base);
      this._protocol = b._protocol; this._username = b._username; this._password = b._password;
      this._hostname = b._hostname; this._port = b._port;
      if (input.startsWith("//")) { this._parseAbsolute(b._protocol, input); return; }
      let rest = input, hash = "", search = b._search;
      const h = rest.indexOf("#");
      if (h >= 0) { hash = rest.slice(h); rest = rest.slice(0, h); }
      const q = rest.indexOf("?");
      if (q >= 0) { search = rest.slice(q); rest = rest.slice(0, q); } else if (rest) search = "";
      let path = b._pathname;
      if (rest.startsWith("/")) path = rest;
      else if (rest) path = b._pathname.slice(0, b._pathname.lastIndexOf("/") + 1) + rest;
      this._pathname = encodePath(normalizePath(path));
      this._search = search === "?" ? "" : encodeQuery(search);
      this._hash = hash === "#" ? "" : hash;
    }
  }
  _parseAbsolute(protocol, rest) {
    this._protocol = protocol;
    this._username = ""; this._password = ""; this._hostname = ""; this._port = "";
    let hash = "", search = "";
    const h = rest.indexOf("#");
    if (h >= 0) { hash = rest.slice(h); rest = rest.slice(0, h); }
    const q = rest.indexOf("?");
    if (q >= 0) { search = rest.slice(q); rest = rest.slice(0, q); }
    if (rest.startsWith("//")) {
      rest = rest.slice(2);
      const slash = rest.indexOf("/");
      let authority = slash < 0 ? rest : rest.slice(0, slash);
      rest = slash < 0 ? "" : rest.slice(slash);
      const at = authority.lastIndexOf("@");
      if (at >= 0) {
        const [user, ...pass] = authority.slice(0, at).split(":");
        this._username = user; this._password = pass.join(":");
        authority = authority.slice(at + 1);
      }
      const port = /:(\d*)$/.exec(authority);
      if (port && !authority.endsWith("]")) { this._port = port[1]; authority = authority.slice(0, port.index); }
      if (!authority && protocol in DEFAULT_PORTS) throw new TypeError(`Invalid URL: no host in ${protocol}//${rest}`);
      this._hostname = authority.toLowerCase();
      if (DEFAULT_PORTS[protocol] === this._port) this._port = "";
      this._pathname = encodePath(normalizePath(rest || "/"));
    } else this._pathname = rest;
    this._search = search === "?" ? "" : encodeQuery(search);
    this._hash = hash === "#" ? "" : hash;
  }
  get protocol() { return this._protocol; }
  set protocol(v) { this._protocol = String(v).replace(/:?$/, ":").toLowerCase(); }
  get username() { return this._username; }
  get password() { return this._password; }
  get hostname() { return this._hostname; }
  set hostname(v) { this._hostname = String(v).toLowerCase(); }
  get port() { return this._port; }
  set port(v) { v = String(v); this._port = DEFAULT_PORTS[this._protocol] === v ? "" : v; }
  get host() { return this._hostname + (this._port ? ":" + this._port : ""); }
  set host(v) { const [name, port = ""] = String(v).split(":"); this.hostname = name; this.port = port; }
  get origin() { return this._protocol + "//" + this.host; }
  get pathname() { return this._pathname; }
  set pathname(v) { this._pathname = encodePath(normalizePath(String(v))); }
  get search() { return this._search; }
  set search(v) { v = String(v); this._search = v && v !== "?" ? encodeQuery(v.startsWith("?") ? v : "?" + v) : ""; if (this._params) this._params._parse(this._search); }
  get searchParams() {
    if (!this._params) { this._params = new URLSearchParams(this._search); this._params._url = this; }
    return this._params;
  }
  get hash() { return this._hash; }
  set hash(v) { v = String(v); this._hash = v && v !== "#" ? (v.startsWith("#") ? v : "#" + v) : ""; }
  get href() {
    const auth = this._username ? this._username + (this._password ? ":" + this._password : "") + "@" : "";
    const slashes = this._hostname || this._protocol in DEFAULT_PORTS ? "//" : "";
    return this._protocol + slashes + auth + this.host + this._pathname + this._search + this._hash;
  }
  set href(v) { const u = new URL(v); Object.assign(this, u); this._params = undefined; }
  toString() { return this.href; }
  toJSON() { return this.href; }
  static canParse(input, base) { try { new URL(input, base); return true; } catch { return false; } }
}

// --- bodies, Request, Response ----------------------------------------------------------------------

export function toBytes(body) {
  if (body === null || body === undefined) return null;
  if (typeof body === "string") return utf8Encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof URLSearchParams) return utf8Encode(body.toString());
  throw new TypeError("a body is a string, a Uint8Array, an ArrayBuffer or URLSearchParams (edgefn has no streams)");
}

class Body {
  _initBody(body, headers) {
    this._body = toBytes(body);
    if (typeof body === "string" && !headers.has("content-type")) headers.set("content-type", "text/plain;charset=UTF-8");
    if (body instanceof URLSearchParams && !headers.has("content-type")) headers.set("content-type", "application/x-www-form-urlencoded;charset=UTF-8");
  }
  get body() { return this._body; }
  get bodyUsed() { return false; }
  bytes() { return Promise.resolve(this._body ? this._body.slice() : new Uint8Array(0)); }
  arrayBuffer() { return this.bytes().then((b) => b.buffer); }
  text() { return Promise.resolve(this._body ? utf8Decode(this._body) : ""); }
  json() { return this.text().then((t) => JSON.parse(t)); }
  formData() { return Promise.reject(new TypeError("formData() is not supported by edgefn; read text() and use URLSearchParams")); }
}

export class Request extends Body {
  constructor(input, init = {}) {
    super();
    const from = input instanceof Request ? input : null;
    this._url = new URL(from ? from.url : String(input));
    this.method = String(init.method || (from ? from.method : "GET")).toUpperCase();
    this.headers = new Headers(init.headers || (from ? from.headers : undefined));
    this._initBody(init.body !== undefined ? init.body : from ? from._body : null, this.headers);
    this.redirect = init.redirect || (from ? from.redirect : "follow");
    this._origin = from ? from._origin : null;  // edgefn: the event this request came from (for the result)
  }
  get url() { return this._url.href; }
  set url(v) { this._url = new URL(String(v), this._url); }
  clone() { return new Request(this); }
  get [Symbol.toStringTag]() { return "Request"; }
}

const STATUS_TEXT = {
  200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content", 301: "Moved Permanently",
  302: "Found", 303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect",
  400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
  409: "Conflict", 410: "Gone", 413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
  500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
};

export class Response extends Body {
  constructor(body = null, init = {}) {
    super();
    const status = init.status === undefined ? 200 : init.status;
    if (!Number.isInteger(status) || status < 200 || status > 599) throw new RangeError(`Response: status ${status} is outside 200..599`);
    this.status = status;
    this.statusText = init.statusText !== undefined ? String(init.statusText) : STATUS_TEXT[status] || "";
    this.headers = new Headers(init.headers);
    this._initBody(body, this.headers);
    this._origin = null;  // edgefn: the event's response this one is (for the result)
  }
  get ok() { return this.status >= 200 && this.status < 300; }
  get redirected() { return false; }
  get type() { return "default"; }
  clone() {
    const r = new Response(this._body, { status: this.status, statusText: this.statusText, headers: this.headers });
    r._origin = this._origin;
    return r;
  }
  static json(data, init = {}) {
    const headers = new Headers(init.headers);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
    return new Response(JSON.stringify(data), { ...init, headers });
  }
  static redirect(url, status = 302) {
    if (![301, 302, 303, 307, 308].includes(status)) throw new RangeError(`Response.redirect: ${status} is not a redirect status`);
    return new Response(null, { status, headers: { location: String(url) } });
  }
  static error() { throw new TypeError("Response.error() has no meaning at the edge: return a 5xx Response"); }
  get [Symbol.toStringTag]() { return "Response"; }
}
