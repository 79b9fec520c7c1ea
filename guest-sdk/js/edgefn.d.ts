// Types of edgefn's JavaScript / TypeScript guest SDK: the module "edgefn" and the Web globals it provides.
// `edgefn init --lang ts` points tsconfig.json here; see guest-sdk/js/README.md.

declare global {
  type HeadersInit = Headers | Record<string, string> | [string, string][];
  type BodyInit = string | Uint8Array | ArrayBuffer | ArrayBufferView | URLSearchParams;

  class Headers implements Iterable<[string, string]> {
    constructor(init?: HeadersInit);
    append(name: string, value: string): void;
    set(name: string, value: string): void;
    get(name: string): string | null;
    getSetCookie(): string[];
    has(name: string): boolean;
    delete(name: string): void;
    forEach(callback: (value: string, name: string, headers: Headers) => void, thisArg?: unknown): void;
    entries(): IterableIterator<[string, string]>;
    keys(): IterableIterator<string>;
    values(): IterableIterator<string>;
    [Symbol.iterator](): IterableIterator<[string, string]>;
  }

  class URLSearchParams implements Iterable<[string, string]> {
    constructor(init?: string | Record<string, string> | [string, string][] | URLSearchParams);
    readonly size: number;
    append(name: string, value: string): void;
    delete(name: string, value?: string): void;
    get(name: string): string | null;
    getAll(name: string): string[];
    has(name: string, value?: string): boolean;
    set(name: string, value: string): void;
    sort(): void;
    forEach(callback: (value: string, name: string, params: URLSearchParams) => void, thisArg?: unknown): void;
    entries(): IterableIterator<[string, string]>;
    keys(): IterableIterator<string>;
    values(): IterableIterator<string>;
    [Symbol.iterator](): IterableIterator<[string, string]>;
    toString(): string;
  }

  class URL {
    constructor(input: string | URL, base?: string | URL);
    static canParse(input: string | URL, base?: string | URL): boolean;
    href: string;
    protocol: string;
    readonly username: string;
    readonly password: string;
    host: string;
    hostname: string;
    port: string;
    readonly origin: string;
    pathname: string;
    search: string;
    readonly searchParams: URLSearchParams;
    hash: string;
    toString(): string;
    toJSON(): string;
  }

  interface Body {
    readonly body: Uint8Array | null;
    readonly bodyUsed: boolean;
    bytes(): Promise<Uint8Array>;
    arrayBuffer(): Promise<ArrayBuffer>;
    text(): Promise<string>;
    json<T = unknown>(): Promise<T>;
  }

  interface RequestInit {
    method?: string;
    headers?: HeadersInit;
    body?: BodyInit | null;
    redirect?: "follow" | "manual" | "error";
  }

  class Request implements Body {
    constructor(input: string | URL | Request, init?: RequestInit);
    readonly body: Uint8Array | null;
    readonly bodyUsed: boolean;
    bytes(): Promise<Uint8Array>;
    arrayBuffer(): Promise<ArrayBuffer>;
    text(): Promise<string>;
    json<T = unknown>(): Promise<T>;
    url: string;
    method: string;
    headers: Headers;
    redirect: string;
    /** edgefn: the viewer's address (requests of an event only). */
    readonly clientIp?: string;
    /** edgefn: the origin the behavior sends this request to (origin-request events), Lambda@Edge's `origin`. */
    origin?: Record<string, unknown>;
    clone(): Request;
  }

  interface ResponseInit {
    status?: number;
    statusText?: string;
    headers?: HeadersInit;
  }

  class Response implements Body {
    constructor(body?: BodyInit | null, init?: ResponseInit);
    static json(data: unknown, init?: ResponseInit): Response;
    static redirect(url: string | URL, status?: 301 | 302 | 303 | 307 | 308): Response;
    readonly body: Uint8Array | null;
    readonly bodyUsed: boolean;
    bytes(): Promise<Uint8Array>;
    arrayBuffer(): Promise<ArrayBuffer>;
    text(): Promise<string>;
    json<T = unknown>(): Promise<T>;
    status: number;
    statusText: string;
    headers: Headers;
    readonly ok: boolean;
    clone(): Response;
  }

  class TextEncoder {
    readonly encoding: "utf-8";
    encode(input?: string): Uint8Array;
  }

  class TextDecoder {
    constructor(label?: "utf-8" | "utf8");
    readonly encoding: "utf-8";
    decode(input?: Uint8Array | ArrayBuffer | ArrayBufferView): string;
  }

  /** Outbound HTTP to the manifest's `allowed_hosts` only; a refused or failed request rejects with a TypeError. */
  function fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;

  /** Lines go to the function's log stream (`edgefn logs`). */
  interface Console {
    debug(...data: unknown[]): void;
    info(...data: unknown[]): void;
    log(...data: unknown[]): void;
    warn(...data: unknown[]): void;
    error(...data: unknown[]): void;
    trace(...data: unknown[]): void;
  }
  var console: Console;
}

// the module "edgefn"
/** What every handler is told about its invocation. */
export interface Context {
  readonly eventType: "viewer-request" | "origin-request" | "origin-response" | "viewer-response";
  readonly requestId: string;
  readonly functionName: string;
  readonly clientIp: string;
}

/** The function's manifest `env` and its secrets, by name (read-only). */
export type Env = Readonly<Record<string, string | undefined>>;

/** A request trigger returns the request (changed or not) to continue, a Response to answer, or nothing. */
export type RequestHandler = (request: Request, ctx: Context) => Request | Response | void | Promise<Request | Response | void>;
/** A response trigger returns the (changed) response, or nothing to keep it. */
export type ResponseHandler = (response: Response, request: Request, ctx: Context) => Response | void | Promise<Response | void>;

/** A function acting as the origin, written like a Worker: `export default { fetch(request, env, ctx) { ... } }`. */
export interface Worker {
  fetch(request: Request, env: Env, ctx: Context): Response | Request | Promise<Response | Request>;
}

export declare const env: Env;
export declare function log(level: "debug" | "info" | "warn" | "error", ...data: unknown[]): void;
export declare const console: Console;
export declare const fetch: typeof globalThis.fetch;

export declare class KvError extends Error {}
export interface KvNamespace {
  readonly name: string;
  /** The value of `key` as bytes, or null. */
  get(key: string | Uint8Array): Uint8Array | null;
  /** The value of `key` as text, or null. */
  getText(key: string | Uint8Array): string | null;
  /** Set `key` to `value`; `ttl` (whole seconds, at least 1) makes it expire. */
  put(key: string | Uint8Array, value: string | Uint8Array, options?: { ttl?: number }): void;
  /** Remove `key`; true if it had a value. */
  delete(key: string | Uint8Array): boolean;
  /** One page of keys starting with `prefix` (byte order), and the cursor of the next page (null: the last). */
  list(options?: { prefix?: string; cursor?: string; limit?: number }): { keys: string[]; cursor: string | null };
}
/** The key-value store, to the namespaces the manifest grants (`kv = ["visits"]`); a refusal throws KvError. */
export declare const kv: { namespace(name: string): KvNamespace };

declare const _Headers: typeof Headers, _Request: typeof Request, _Response: typeof Response, _URL: typeof URL;
declare const _URLSearchParams: typeof URLSearchParams, _TextEncoder: typeof TextEncoder, _TextDecoder: typeof TextDecoder;
export { _Headers as Headers, _Request as Request, _Response as Response, _URL as URL };
export { _URLSearchParams as URLSearchParams, _TextEncoder as TextEncoder, _TextDecoder as TextDecoder };
