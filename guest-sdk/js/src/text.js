// UTF-8 both ways, and the Web's TextEncoder / TextDecoder over it (QuickJS has neither).

export function utf8Encode(s) {
  const out = new Uint8Array(s.length * 3);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) { c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00); i++; }
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;  // a lone surrogate
    if (c < 0x80) out[n++] = c;
    else if (c < 0x800) { out[n++] = 0xc0 | (c >> 6); out[n++] = 0x80 | (c & 63); }
    else if (c < 0x10000) { out[n++] = 0xe0 | (c >> 12); out[n++] = 0x80 | ((c >> 6) & 63); out[n++] = 0x80 | (c & 63); }
    else { out[n++] = 0xf0 | (c >> 18); out[n++] = 0x80 | ((c >> 12) & 63); out[n++] = 0x80 | ((c >> 6) & 63); out[n++] = 0x80 | (c & 63); }
  }
  return out.slice(0, n);
}

const NON_ASCII = /[\x80-\xff]/;

export function utf8Decode(b) {
  if (b.length <= 8192) {
    // the engine's own code does the work (a JS loop per byte costs ~10x more fuel): ASCII as it is, other UTF-8
    // through decodeURIComponent; invalid UTF-8 throws there and takes the replacing decoder below
    const latin = String.fromCharCode.apply(null, b);
    if (!NON_ASCII.test(latin)) return latin;
    try { return decodeURIComponent(escape(latin)); } catch { /* the replacing decoder below */ }
  }
  return utf8DecodeSlow(b);
}

function utf8DecodeSlow(b) {
  let s = "";
  const chunk = [];
  for (let i = 0; i < b.length;) {
    const c = b[i];
    let cp = 0xfffd, size = 1;
    if (c < 0x80) cp = c;
    else if (c >= 0xc2 && c < 0xe0 && (b[i + 1] & 0xc0) === 0x80) { cp = ((c & 31) << 6) | (b[i + 1] & 63); size = 2; }
    else if (c >= 0xe0 && c < 0xf0 && (b[i + 1] & 0xc0) === 0x80 && (b[i + 2] & 0xc0) === 0x80) {
      const v = ((c & 15) << 12) | ((b[i + 1] & 63) << 6) | (b[i + 2] & 63);
      if (v >= 0x800 && (v < 0xd800 || v > 0xdfff)) { cp = v; size = 3; }
    } else if (c >= 0xf0 && c < 0xf5 && (b[i + 1] & 0xc0) === 0x80 && (b[i + 2] & 0xc0) === 0x80 && (b[i + 3] & 0xc0) === 0x80) {
      const v = ((c & 7) << 18) | ((b[i + 1] & 63) << 12) | ((b[i + 2] & 63) << 6) | (b[i + 3] & 63);
      if (v >= 0x10000 && v <= 0x10ffff) { cp = v; size = 4; }
    }
    i += size;
    if (cp >= 0x10000) { cp -= 0x10000; chunk.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff)); } else chunk.push(cp);
    if (chunk.length >= 4096) { s += String.fromCharCode.apply(null, chunk); chunk.length = 0; }
  }
  return s + String.fromCharCode.apply(null, chunk);
}

export class TextEncoder {
  get encoding() { return "utf-8"; }
  encode(s = "") { return utf8Encode(String(s)); }
}

export class TextDecoder {
  constructor(label = "utf-8") {
    if (!/^utf-?8$/i.test(label)) throw new RangeError(`TextDecoder: only utf-8 is supported, not ${label}`);
  }
  get encoding() { return "utf-8"; }
  decode(input) {
    if (input === undefined) return "";
    const bytes = input instanceof Uint8Array ? input : ArrayBuffer.isView(input)
      ? new Uint8Array(input.buffer, input.byteOffset, input.byteLength) : new Uint8Array(input);
    return utf8Decode(bytes);
  }
}
