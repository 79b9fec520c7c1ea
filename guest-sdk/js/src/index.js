// edgefn's JavaScript / TypeScript guest SDK (guest-sdk/js/README.md): `import { kv, log } from "edgefn"`.
// Importing it also makes the Web globals a Worker expects: Request, Response, Headers, URL,
// URLSearchParams, TextEncoder, TextDecoder, fetch and console.
import { console, env, fetch, kv, KvError, log } from "./host.js";
import { TextDecoder, TextEncoder } from "./text.js";
import { Headers, Request, Response, URL, URLSearchParams } from "./web.js";

export { bind } from "./runtime.js";
export { console, env, fetch, Headers, kv, KvError, log, Request, Response, TextDecoder, TextEncoder, URL, URLSearchParams };

// always the SDK's, even where an engine has its own: these are the classes the result is read from
const globals = { console, fetch, Headers, Request, Response, TextDecoder, TextEncoder, URL, URLSearchParams };
for (const [name, value] of Object.entries(globals)) globalThis[name] = value;
