// CBOR (RFC 8949), the subset edgefn's event and result documents use (guest-sdk/ABI.md §4-5): maps,
// arrays, text and byte strings, integers, booleans and null; floats are decoded but never written.
import { utf8Decode, utf8Encode } from "./text.js";

export function encode(value) {
  const out = new Writer();
  write(out, value);
  return out.bytes();
}

class Writer {
  constructor() { this.buf = new Uint8Array(1024); this.len = 0; }
  room(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  byte(b) { this.room(1); this.buf[this.len++] = b; }
  head(major, n) {
    const m = major << 5;
    if (n < 24) this.byte(m | n);
    else if (n < 0x100) { this.room(2); this.buf[this.len++] = m | 24; this.buf[this.len++] = n; }
    else if (n < 0x10000) { this.room(3); this.buf[this.len++] = m | 25; this.buf[this.len++] = n >> 8; this.buf[this.len++] = n & 0xff; }
    else if (n < 0x100000000) {
      this.room(5); this.buf[this.len++] = m | 26;
      this.buf[this.len++] = (n >>> 24) & 0xff; this.buf[this.len++] = (n >>> 16) & 0xff;
      this.buf[this.len++] = (n >>> 8) & 0xff; this.buf[this.len++] = n & 0xff;
    } else {
      this.room(9); this.buf[this.len++] = m | 27;
      const hi = Math.floor(n / 0x100000000), lo = n >>> 0;
      for (const word of [hi, lo]) for (let s = 24; s >= 0; s -= 8) this.buf[this.len++] = (word >>> s) & 0xff;
    }
  }
  raw(bytes) { this.room(bytes.length); this.buf.set(bytes, this.len); this.len += bytes.length; }
  bytes() { return this.buf.slice(0, this.len); }
}

// ASCII straight into the buffer (most of an event's and a result's text); anything else through UTF-8
function writeText(out, s) {
  const n = s.length;
  out.room(n + 9);
  const mark = out.len;
  out.head(3, n);
  const buf = out.buf;
  let p = out.len;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) {
      out.len = mark;
      const b = utf8Encode(s);
      out.head(3, b.length);
      return out.raw(b);
    }
    buf[p++] = c;
  }
  out.len = p;
}

function write(out, v) {
  if (v === null || v === undefined) return out.byte(0xf6);
  if (v === true) return out.byte(0xf5);
  if (v === false) return out.byte(0xf4);
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw new TypeError(`CBOR: edgefn documents hold integers only, not ${v}`);
    return v >= 0 ? out.head(0, v) : out.head(1, -1 - v);
  }
  if (typeof v === "string") return writeText(out, v);
  if (v instanceof Uint8Array) { out.head(2, v.length); return out.raw(v); }
  if (v instanceof ArrayBuffer) return write(out, new Uint8Array(v));
  if (Array.isArray(v)) { out.head(4, v.length); for (const item of v) write(out, item); return; }
  if (typeof v === "object") {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined);
    out.head(5, keys.length);
    for (const k of keys) { write(out, k); write(out, v[k]); }
    return;
  }
  throw new TypeError(`CBOR: cannot encode a ${typeof v}`);
}

export function decode(bytes) {
  const reader = { b: bytes, p: 0 };
  const value = read(reader);
  if (reader.p !== bytes.length) throw new TypeError("CBOR: trailing bytes after the document");
  return value;
}

function length(r, info) {
  if (info < 24) return info;
  const b = r.b;
  let n;
  if (info === 24) n = b[r.p];
  else if (info === 25) n = (b[r.p] << 8) | b[r.p + 1];
  else if (info === 26) n = ((b[r.p] << 24) >>> 0) + ((b[r.p + 1] << 16) | (b[r.p + 2] << 8) | b[r.p + 3]);
  else if (info === 27) {
    n = 0;
    for (let i = 0; i < 8; i++) n = n * 256 + b[r.p + i];
  } else throw new TypeError("CBOR: indefinite lengths are not used by edgefn");
  r.p += 1 << (info - 24);
  if (r.p > b.length) throw new TypeError("CBOR: truncated");
  return n;
}

function read(r) {
  if (r.p >= r.b.length) throw new TypeError("CBOR: truncated");
  const first = r.b[r.p++];
  const major = first >> 5, info = first & 31;
  switch (major) {
    case 0: return length(r, info);
    case 1: return -1 - length(r, info);
    case 2: case 3: {
      const n = length(r, info);
      if (r.p + n > r.b.length) throw new TypeError("CBOR: truncated string");
      const part = r.b.subarray(r.p, r.p + n);
      r.p += n;
      return major === 2 ? part.slice() : utf8Decode(part);
    }
    case 4: { const n = length(r, info); const out = []; for (let i = 0; i < n; i++) out.push(read(r)); return out; }
    case 5: {
      const n = length(r, info); const out = {};
      for (let i = 0; i < n; i++) { const k = read(r); out[String(k)] = read(r); }
      return out;
    }
    case 6: length(r, info); return read(r);  // a tag: its content
    default:
      if (info === 20) return false;
      if (info === 21) return true;
      if (info === 22 || info === 23) return null;
      if (info === 25 || info === 26 || info === 27) {
        const size = 1 << (info - 24);
        const view = new DataView(r.b.buffer, r.b.byteOffset + r.p, size);
        r.p += size;
        return info === 25 ? half(view.getUint16(0)) : info === 26 ? view.getFloat32(0) : view.getFloat64(0);
      }
      throw new TypeError(`CBOR: unknown simple value ${info}`);
  }
}

function half(h) {
  const exp = (h >> 10) & 0x1f, mant = h & 0x3ff, sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
