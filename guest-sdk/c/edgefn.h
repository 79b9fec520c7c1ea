/*
 * edgefn.h - C guest SDK for edgefn, guest ABI v1 (see guest-sdk/ABI.md).
 *
 * One header, no libc, C99. Include it exactly once, from the one .c file of a function, and define
 *
 *     edgefn_result edgefn_main(const edgefn_event *ev);
 *
 * The header defines the module's exports itself (edgefn_abi_v1, edgefn_alloc, edgefn_handle; the
 * linker exports `memory`) and imports only edgefn:host/v1.log, env_get, fetch, fetch_result, kv and
 * kv_result, and each only when the function uses edgefn_log* / edgefn_env / edgefn_fetch_send / edgefn_kv_*.
 *
 *   #include "edgefn.h"
 *
 *   edgefn_result edgefn_main(const edgefn_event *ev) {
 *       edgefn_str ua;
 *       if (edgefn_header_get(ev->request.headers, "user-agent", &ua))
 *           edgefn_log_str(EDGEFN_LOG_INFO, ua);
 *       if (edgefn_str_starts_with(ev->request.uri, "/api/"))
 *           return edgefn_continue(ev);                          // pass the request on, unchanged
 *       edgefn_out res = edgefn_new_response(200, "OK");         // or short-circuit with a response
 *       edgefn_set_header(&res, "Content-Type", "text/plain; charset=utf-8");
 *       edgefn_set_body_text(&res, "Hello from edgefn!");
 *       return edgefn_finish(&res);
 *   }
 *
 * Build by hand (`edgefn build` uses the same flags, plus -Wall):
 *   python -m ziglang cc --target=wasm32-freestanding -Oz -s -nostdlib -mbulk-memory \
 *       -Wl,--no-entry -Wl,--strip-all -I guest-sdk/c fn.c -o fn.wasm
 *
 * API overview (full reference in guest-sdk/c/README.md):
 *   strings   edgefn_str {ptr,len} (not NUL-terminated unless said so), EDGEFN_STR("lit"), edgefn_cstr,
 *             edgefn_str_eq / _ieq / _starts_with / _sub, edgefn_ct_eq (constant time)
 *   event     edgefn_event (type, request_id, request{client_ip,method,uri,querystring,headers,body},
 *             has_response, response{status,status_description,headers,body}); strings point into the
 *             event buffer (read in place, never copied)
 *   headers   edgefn_header_get (first value), edgefn_headers_iter / edgefn_headers_next (all values)
 *   results   edgefn_continue, edgefn_respond, edgefn_error; builders edgefn_edit_request,
 *             edgefn_edit_response, edgefn_new_response + edgefn_set_* / edgefn_add_header /
 *             edgefn_remove_header, then edgefn_finish
 *   env, log  edgefn_env, edgefn_log / edgefn_log_str / edgefn_log_debug|info|warn|error
 *   fetch     edgefn_fetch_new / _new_str, edgefn_fetch_header / _header_str, edgefn_fetch_body, then
 *             edgefn_fetch_send -> edgefn_fetch_response {ok, status, headers, body, error}
 *   kv        edgefn_kv_get / _put / _delete / _list (+ edgefn_kv_next_key) -> edgefn_kv_result
 *             {ok, found, value, cursor, error}: the namespaces the manifest grants (kv = [...])
 *   memory    edgefn_arena_alloc (bump arena, reset by every invocation), edgefn_buf (growable string)
 *
 * Memory: everything the SDK allocates lives in a bump arena that starts at __heap_base, grows with
 * memory.grow (with target = "wasi", where libc's malloc owns the heap: in blocks from malloc) and is
 * reset at the start of every invocation (edgefn_alloc), so nothing is ever freed
 * and a reused instance recycles all buffers. If an allocation the caller cannot see fails (a header
 * copy, an edgefn_buf append, an env value), the invocation's result is replaced by the function error
 * {"errorType": "OutOfMemory", ...}: a result is never silently built from truncated data.
 *
 * Safety: the event is validated completely (well-formed CBOR with definite lengths, only
 * uint/nint/bstr/tstr/array/map/false/true/null, known fields of the right type, no trailing bytes)
 * before edgefn_main runs; a bad event yields {"errorType": "InvalidEvent"} and edgefn_main is not
 * called. All readers are bounds-checked anyway. Builder misuse (an empty or invalid header name, CR/LF
 * in a header value, a status outside 100..599, a request result in a response trigger, ...) yields
 * {"errorType": "EdgefnUsageError", "errorMessage": "<what>"} from edgefn_finish.
 */
#ifndef EDGEFN_H
#define EDGEFN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(__wasm32__)
#error "edgefn.h targets wasm32: build with --target=wasm32-freestanding"
#endif

/* Every SDK function is static (one translation unit); unused ones must not warn. `edgefn dev` builds
 * with EDGEFN_SPLIT_BUILD: the SDK compiled once on its own (this header as a C file), the function
 * against this header's declarations, the two linked; the same code and flags, minus cross-file inlining. */
#ifdef EDGEFN_SPLIT_BUILD
#define EDGEFN__FN __attribute__((unused))
#define EDGEFN__MAIN
#else
#define EDGEFN__FN static __attribute__((unused))
#define EDGEFN__MAIN static
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Public types                                                                                     */
/* ------------------------------------------------------------------------------------------------ */

/* A string slice. Not NUL-terminated unless a function says so. Never NULL-ptr for SDK results. */
typedef struct {
    const char *ptr;
    size_t len;
} edgefn_str;

/* A byte slice. */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} edgefn_bytes;

/* A string literal as an edgefn_str (no strlen at run time). */
#define EDGEFN_STR(lit) ((edgefn_str){ (lit), sizeof(lit) - 1 })
#define EDGEFN__IS(s, lit) edgefn__eq((s), EDGEFN_STR(lit), false)

typedef enum {
    EDGEFN_EVENT_UNKNOWN = 0,
    EDGEFN_VIEWER_REQUEST = 1,
    EDGEFN_ORIGIN_REQUEST = 2,
    EDGEFN_ORIGIN_RESPONSE = 3,
    EDGEFN_VIEWER_RESPONSE = 4
} edgefn_event_type;

typedef enum {
    EDGEFN_LOG_DEBUG = 0,
    EDGEFN_LOG_INFO = 1,
    EDGEFN_LOG_WARN = 2,
    EDGEFN_LOG_ERROR = 3
} edgefn_log_level;

/* A header map of the event: a validated CBOR map lowercase-name => [{"key","value"}...], in place. */
typedef struct {
    const uint8_t *cbor;
    size_t len; /* 0: no headers */
} edgefn_headers;

/* One header value. name: the lowercase map key; key: the name as the client sent it. */
typedef struct {
    edgefn_str name;
    edgefn_str key;
    edgefn_str value;
} edgefn_header;

/* Iterator over header values (all of them, or those of one name). Fields are private. */
typedef struct {
    const uint8_t *p;
    size_t n;
    uint32_t names_left;
    uint32_t vals_left;
    edgefn_str name;
    edgefn_str filter;  /* filter.ptr NULL: every header */
} edgefn_header_iter;

/* A request or response body as delivered in the event. */
typedef struct {
    bool present;   /* the trigger included the body */
    bool truncated; /* "inputTruncated": data is only the first part of the body */
    edgefn_bytes data;
} edgefn_body;

typedef struct {
    edgefn_str client_ip;
    edgefn_str method;
    edgefn_str uri;         /* path only, starts with "/" */
    edgefn_str querystring; /* without "?", empty when absent */
    edgefn_headers headers;
    edgefn_body body;
} edgefn_request;

typedef struct {
    uint32_t status;
    edgefn_str status_description;
    edgefn_headers headers;
    edgefn_body body;
} edgefn_response;

typedef struct {
    edgefn_event_type type;
    edgefn_str event_type; /* "viewer-request", ... as sent */
    edgefn_str request_id;
    edgefn_str distribution_domain_name;
    edgefn_str distribution_id;
    edgefn_str function_name;
    edgefn_request request;
    bool has_response; /* origin-response and viewer-response events */
    edgefn_response response;
} edgefn_event;

/* An encoded result document (produced by the SDK; return it from edgefn_main). */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} edgefn_result;

/* Growable arena string, zero-initialise it: `edgefn_buf b = {0};`. Kept NUL-terminated. */
typedef struct {
    char *ptr;
    size_t len;
    size_t cap;
    bool failed; /* an append ran out of memory (the invocation then fails with OutOfMemory) */
} edgefn_buf;

/* Header edit operation (private). */
typedef struct edgefn__hop {
    struct edgefn__hop *next;
    int kind;
    /* computed by edgefn_finish (see edgefn__plan_make) */
    struct edgefn__hop *same, *from;
    uint32_t nvals;
    bool first, keep, in_base;
    edgefn_str lname, key, value;
} edgefn__hop;

/* A result being built: a request (continue) or a response. Create it with edgefn_edit_request,
   edgefn_edit_response or edgefn_new_response; fields are private. */
typedef struct {
    int kind;
    bool failed;
    const char *misuse;
    edgefn_headers base; /* incoming headers re-emitted with the edits applied */
    bool emit_headers;   /* emit "headers" even without edits */
    edgefn__hop *ops, *ops_tail;
    uint32_t status;
    bool has_description;
    edgefn_str description;
    unsigned set_mask;
    edgefn_str uri, querystring, method;
    int body_kind;
    const void *body;
    size_t body_len;
} edgefn_out;

/* An outbound HTTP request being built (edgefn_fetch_new, edgefn_fetch_header, edgefn_fetch_body),
   sent with edgefn_fetch_send. Fields are private. */
typedef struct {
    edgefn_out hdrs; /* the header edits (the result builder's checks and encoder), failed, misuse */
    edgefn_str method, url;
    bool has_body;
    const void *body;
    size_t body_len;
} edgefn_fetch_request;

/* The outcome of edgefn_fetch_send. ok: the host got an HTTP response (any status, 4xx/5xx too);
   status, headers (use edgefn_header_get / edgefn_headers_iter) and body point into one arena copy
   of the host's result and stay valid until edgefn_main returns. !ok: no response; error says why
   (refused host, timeout, unreachable, too large, out of memory, misuse), not NUL-terminated. */
typedef struct {
    bool ok;
    uint32_t status;        /* 0 when !ok */
    edgefn_headers headers; /* len 0 when !ok or none */
    edgefn_bytes body;      /* empty (never a NULL ptr) when !ok or none */
    edgefn_str error;       /* empty when ok */
} edgefn_fetch_response;

/* The outcome of a key-value call (edgefn_kv_get, _put, _delete, _list). ok: the host did it; !ok:
   refused (a namespace not granted, kv_ops or kv_bytes spent, a key over 512 bytes, a value over 25 MiB)
   or failed, and error says why. found: get - the key has a value (in value); delete - it had one.
   list: the keys one by one with edgefn_kv_next_key; cursor (empty on the last page) asks for the next
   page. Everything points into one arena copy of the host's answer, valid until edgefn_main returns. */
typedef struct {
    bool ok;
    bool found;
    edgefn_bytes value;
    edgefn_str cursor;
    edgefn_str error;
    uint32_t key_count; /* list: how many keys the page holds */
    const uint8_t *keys_at; /* private: the next key's CBOR */
    size_t keys_left;       /* private */
} edgefn_kv_result;

/* The function's handler, defined by the user. */
EDGEFN__MAIN edgefn_result edgefn_main(const edgefn_event *ev);

/* ------------------------------------------------------------------------------------------------ */
/* Host imports                                                                                     */
/* ------------------------------------------------------------------------------------------------ */

__attribute__((import_module("edgefn:host/v1"), import_name("log")))
void edgefn__host_log(int32_t level, const char *ptr, size_t len);

__attribute__((import_module("edgefn:host/v1"), import_name("env_get")))
int32_t edgefn__host_env_get(const char *key, size_t key_len, char *buf, size_t buf_cap);

__attribute__((import_module("edgefn:host/v1"), import_name("fetch")))
int32_t edgefn__host_fetch(const uint8_t *req, size_t req_len);

__attribute__((import_module("edgefn:host/v1"), import_name("fetch_result")))
int32_t edgefn__host_fetch_result(uint8_t *buf, size_t buf_cap);

__attribute__((import_module("edgefn:host/v1"), import_name("kv")))
int32_t edgefn__host_kv(const uint8_t *req, size_t req_len);

__attribute__((import_module("edgefn:host/v1"), import_name("kv_result")))
int32_t edgefn__host_kv_result(uint8_t *buf, size_t buf_cap);

/* ------------------------------------------------------------------------------------------------ */
/* Strings                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

EDGEFN__FN size_t edgefn__strlen(const char *s) {
    size_t n = 0;
    if (!s) return 0;
    while (s[n]) n++;
    return n;
}

EDGEFN__FN char edgefn__lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c; }

/* A NUL-terminated string as a slice (NULL gives the empty string). */
EDGEFN__FN edgefn_str edgefn_cstr(const char *s) {
    edgefn_str r;
    r.ptr = s ? s : "";
    r.len = edgefn__strlen(s);
    return r;
}

EDGEFN__FN bool edgefn__eq(edgefn_str a, edgefn_str b, bool fold) {
    const char *x = a.ptr, *y = b.ptr;
    size_t n = a.len;
    if (n != b.len) return false;
    if (!fold) { /* exact: four bytes at a time (unaligned i32.load is fine in wasm) */
        for (; n >= 4; n -= 4, x += 4, y += 4) {
            uint32_t u, v;
            __builtin_memcpy(&u, x, 4);
            __builtin_memcpy(&v, y, 4);
            if (u != v) return false;
        }
    }
    for (; n; n--, x++, y++)
        if (*x != *y && (!fold || edgefn__lower(*x) != edgefn__lower(*y))) return false;
    return true;
}

/* s equals the NUL-terminated string b. */
EDGEFN__FN bool edgefn_str_eq(edgefn_str s, const char *b) { return edgefn__eq(s, edgefn_cstr(b), false); }

/* s equals b, ignoring ASCII case. */
EDGEFN__FN bool edgefn_str_ieq(edgefn_str s, const char *b) { return edgefn__eq(s, edgefn_cstr(b), true); }

/* s begins with prefix. */
EDGEFN__FN bool edgefn_str_starts_with(edgefn_str s, const char *prefix) {
    edgefn_str p = edgefn_cstr(prefix);
    if (p.len > s.len) return false;
    s.len = p.len;
    return edgefn__eq(s, p, false);
}

/* The part of s from byte `start`, at most `len` bytes (clamped to s; (size_t)-1 for "the rest"). */
EDGEFN__FN edgefn_str edgefn_str_sub(edgefn_str s, size_t start, size_t len) {
    if (start > s.len) start = s.len;
    if (len > s.len - start) len = s.len - start;
    s.ptr += start;
    s.len = len;
    return s;
}

/* Constant-time equality for secrets: the time depends only on the lengths, never on the contents.
   Pass the secret as `expected`. */
EDGEFN__FN bool edgefn_ct_eq(edgefn_str given, edgefn_str expected) {
    volatile uint32_t diff = (uint32_t)(given.len ^ expected.len);
    for (size_t i = 0; i < expected.len; i++) {
        uint8_t g = i < given.len ? (uint8_t)given.ptr[i] : 0;
        diff |= (uint32_t)(g ^ (uint8_t)expected.ptr[i]);
    }
    return diff == 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Memory: a bump arena: over __heap_base (freestanding), or over blocks from malloc (WASI)         */
/* ------------------------------------------------------------------------------------------------ */

static uint32_t edgefn__top; /* 0: not set up yet */
static bool edgefn__oom;      /* an allocation the user cannot observe failed in this invocation */

#ifndef __wasi__
/* freestanding: the arena owns all memory from __heap_base up */
extern unsigned char __heap_base;
typedef uint32_t edgefn__mark;

EDGEFN__FN void edgefn__arena_reset(void) {
    edgefn__top = (uint32_t)(uintptr_t)&__heap_base;
    edgefn__oom = false;
}

/* Make [.., end) addressable and move the arena top to end. */
EDGEFN__FN bool edgefn__arena_bump(uint64_t end) {
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * 65536u;
    if (end > 0xFFFF0000u) return false;
    if (end > have) {
        uint64_t pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1) return false;
    }
    edgefn__top = (uint32_t)end;
    return true;
}

EDGEFN__FN bool edgefn__arena_more(uint64_t start, size_t n, uint64_t *at) {
    *at = start;
    return edgefn__arena_bump(start + (uint64_t)n);
}

EDGEFN__FN edgefn__mark edgefn__arena_mark(void) { return edgefn__top; }
EDGEFN__FN void edgefn__arena_restore(edgefn__mark m) { edgefn__top = m; }
#else
/* WASI: libc's malloc owns the heap (stdio, fopen and the function's own malloc use it), so the arena is a
   chain of blocks from malloc: the first kept across invocations, the later ones freed at each reset */
#include <stdlib.h>
typedef struct edgefn__block { struct edgefn__block *next; uint32_t size; uint32_t pad; } edgefn__block;
typedef struct { uint32_t top, limit; } edgefn__mark;
static edgefn__block *edgefn__blocks; /* newest first */
static uint32_t edgefn__limit;        /* the end of the newest block */

EDGEFN__FN void edgefn__arena_use(edgefn__block *b) {
    edgefn__top = (uint32_t)(uintptr_t)(b + 1);
    edgefn__limit = (uint32_t)(uintptr_t)b + b->size;
}

EDGEFN__FN void edgefn__arena_reset(void) {
    while (edgefn__blocks && edgefn__blocks->next) {
        edgefn__block *next = edgefn__blocks->next;
        free(edgefn__blocks);
        edgefn__blocks = next;
    }
    if (!edgefn__blocks && (edgefn__blocks = (edgefn__block *)malloc(65536u)) != NULL) {
        edgefn__blocks->next = NULL;
        edgefn__blocks->size = 65536u;
    }
    if (edgefn__blocks) edgefn__arena_use(edgefn__blocks);
    else edgefn__top = edgefn__limit = 8u; /* nothing fits: every allocation fails */
    edgefn__oom = false;
}

EDGEFN__FN bool edgefn__arena_bump(uint64_t end) {
    if (end > edgefn__limit) return false;
    edgefn__top = (uint32_t)end;
    return true;
}

/* n bytes from start, or from a new block (at least twice the newest) when they do not fit */
EDGEFN__FN bool edgefn__arena_more(uint64_t start, size_t n, uint64_t *at) {
    *at = start;
    if (edgefn__arena_bump(start + (uint64_t)n)) return true;
    uint64_t size = (uint64_t)n + sizeof(edgefn__block) + 8u;
    uint64_t twice = edgefn__blocks ? 2u * (uint64_t)edgefn__blocks->size : 65536u;
    if (size < twice) size = twice;
    if (size > 0xFFFF0000u) return false;
    edgefn__block *b = (edgefn__block *)malloc((size_t)size);
    if (!b) return false;
    b->next = edgefn__blocks;
    b->size = (uint32_t)size;
    edgefn__blocks = b;
    edgefn__arena_use(b);
    *at = ((uint64_t)edgefn__top + 7u) & ~(uint64_t)7u;
    edgefn__top = (uint32_t)(*at + (uint64_t)n);
    return true;
}

EDGEFN__FN edgefn__mark edgefn__arena_mark(void) { edgefn__mark m = { edgefn__top, edgefn__limit }; return m; }
EDGEFN__FN void edgefn__arena_restore(edgefn__mark m) { edgefn__top = m.top; edgefn__limit = m.limit; }
#endif

/* n bytes, 8-aligned, not zeroed, valid until the end of the invocation. NULL when memory is
   exhausted (memory_mb in the manifest). */
EDGEFN__FN void *edgefn_arena_alloc(size_t n) {
    if (edgefn__top == 0) edgefn__arena_reset();
    uint64_t start = ((uint64_t)edgefn__top + 7u) & ~(uint64_t)7u, at;
    if (!edgefn__arena_more(start, n, &at)) return NULL;
    return (void *)(uintptr_t)at;
}

/* Internal allocation: failure poisons the invocation (OutOfMemory result). */
EDGEFN__FN void *edgefn__alloc(size_t n) {
    void *p = edgefn_arena_alloc(n);
    if (!p) edgefn__oom = true;
    return p;
}

/* ------------------------------------------------------------------------------------------------ */
/* edgefn_buf: growable NUL-terminated string in the arena                                          */
/* ------------------------------------------------------------------------------------------------ */

EDGEFN__FN bool edgefn__buf_reserve(edgefn_buf *b, size_t extra) {
    if (b->failed) return false;
    uint64_t need = (uint64_t)b->len + extra + 1u; /* + NUL */
    if (need <= b->cap) return true;
    uint64_t cap = (uint64_t)b->cap * 2u;
    if (cap < need) cap = need;
    if (cap < 32) cap = 32;
    if (cap > 0xFFFF0000u) cap = need;
    if (b->ptr && (uint32_t)(uintptr_t)b->ptr + b->cap == edgefn__top &&
        edgefn__arena_bump((uint64_t)(uintptr_t)b->ptr + cap)) {
        b->cap = (size_t)cap; /* grown in place: it was the last allocation */
        return true;
    }
    char *p = (char *)edgefn__alloc((size_t)cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    if (b->len) __builtin_memcpy(p, b->ptr, b->len);
    p[b->len] = 0;
    b->ptr = p;
    b->cap = (size_t)cap;
    return true;
}

EDGEFN__FN void edgefn_buf_add(edgefn_buf *b, edgefn_str s) {
    if (!edgefn__buf_reserve(b, s.len)) return;
    if (s.len) __builtin_memcpy(b->ptr + b->len, s.ptr, s.len);
    b->len += s.len;
    b->ptr[b->len] = 0;
}

EDGEFN__FN void edgefn_buf_add_cstr(edgefn_buf *b, const char *s) { edgefn_buf_add(b, edgefn_cstr(s)); }

EDGEFN__FN void edgefn_buf_add_char(edgefn_buf *b, char c) {
    edgefn_str s;
    s.ptr = &c;
    s.len = 1;
    edgefn_buf_add(b, s);
}

EDGEFN__FN void edgefn_buf_add_uint(edgefn_buf *b, uint64_t v) {
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    edgefn_str s;
    s.ptr = tmp + i;
    s.len = sizeof tmp - i;
    edgefn_buf_add(b, s);
}

/* The contents so far, NUL-terminated (ptr is "" for an empty buffer). */
EDGEFN__FN edgefn_str edgefn_buf_str(const edgefn_buf *b) {
    edgefn_str s;
    s.ptr = (b->ptr && !b->failed) ? b->ptr : "";
    s.len = (b->ptr && !b->failed) ? b->len : 0;
    return s;
}

EDGEFN__FN const char *edgefn_buf_cstr(const edgefn_buf *b) { return edgefn_buf_str(b).ptr; }

/* ------------------------------------------------------------------------------------------------ */
/* Logging and environment                                                                          */
/* ------------------------------------------------------------------------------------------------ */

EDGEFN__FN void edgefn_log_str(edgefn_log_level level, edgefn_str msg) {
    edgefn__host_log((int32_t)level, msg.ptr, msg.len);
}
EDGEFN__FN void edgefn_log(edgefn_log_level level, const char *msg) { edgefn_log_str(level, edgefn_cstr(msg)); }
EDGEFN__FN void edgefn_log_debug(const char *msg) { edgefn_log(EDGEFN_LOG_DEBUG, msg); }
EDGEFN__FN void edgefn_log_info(const char *msg) { edgefn_log(EDGEFN_LOG_INFO, msg); }
EDGEFN__FN void edgefn_log_warn(const char *msg) { edgefn_log(EDGEFN_LOG_WARN, msg); }
EDGEFN__FN void edgefn_log_error(const char *msg) { edgefn_log(EDGEFN_LOG_ERROR, msg); }

/* Looks up the function's environment variable `key` (manifest `env`). On success *value is a
   NUL-terminated copy in the arena (possibly empty) and the result is true; false if it is not set. */
EDGEFN__FN bool edgefn_env(const char *key, edgefn_str *value) {
    edgefn_str k = edgefn_cstr(key);
    size_t cap = 120;
    for (int attempt = 0; attempt < 4; attempt++) {
        edgefn__mark mark = edgefn__arena_mark();
        char *buf = (char *)edgefn__alloc(cap + 1);
        if (!buf) return false;
        int32_t r = edgefn__host_env_get(k.ptr, k.len, buf, cap);
        if (r < 0) { /* -1: not set; -2: cannot happen with arena pointers */
            edgefn__arena_restore(mark);
            return false;
        }
        if ((uint32_t)r <= cap) {
            buf[r] = 0;
            edgefn__top = (uint32_t)(uintptr_t)buf + (uint32_t)r + 1u; /* give back the slack */
            value->ptr = buf;
            value->len = (size_t)r;
            return true;
        }
        edgefn__arena_restore(mark);
        cap = (size_t)(uint32_t)r; /* too small: retry with the announced length */
    }
    return false;
}

/* ------------------------------------------------------------------------------------------------ */
/* CBOR reader (in place, bounds-checked, definite lengths only)                                    */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t n; /* bytes left */
} edgefn__rd;

enum { EDGEFN__UINT = 0, EDGEFN__NINT, EDGEFN__BSTR, EDGEFN__TSTR, EDGEFN__ARR, EDGEFN__MAP, EDGEFN__TAG, EDGEFN__SIMPLE };

/* Reads one initial byte + argument. Rejects reserved/indefinite encodings, tags, floats and simple
   values other than false (20), true (21) and null (22). For strings the payload must fit; it is
   not consumed. For arrays/maps the count must be plausible (at most one item per remaining byte). */
EDGEFN__FN bool edgefn__head(edgefn__rd *r, int *major, uint64_t *val) {
    if (r->n < 1) return false;
    uint8_t ib = r->p[0];
    int mt = ib >> 5;
    unsigned ai = ib & 31u;
    uint64_t v = 0;
    size_t hl = 1;
    if (ai < 24) {
        v = ai;
    } else if (ai <= 27) {
        hl = 1u + ((size_t)1 << (ai - 24));
        if (r->n < hl) return false;
        for (size_t i = 1; i < hl; i++) v = (v << 8) | r->p[i];
    } else {
        return false;
    }
    if (mt == EDGEFN__TAG) return false;
    if (mt == EDGEFN__SIMPLE && (ai < 20 || ai > 22)) return false;
    r->p += hl;
    r->n -= hl;
    if ((mt == EDGEFN__BSTR || mt == EDGEFN__TSTR || mt == EDGEFN__ARR || mt == EDGEFN__MAP) && v > r->n)
        return false;
    *major = mt;
    *val = v;
    return true;
}

/* Skips one complete data item, iteratively (no recursion, no depth limit needed). */
EDGEFN__FN bool edgefn__skip(edgefn__rd *r) {
    uint64_t pending = 1;
    while (pending) {
        int mt;
        uint64_t v;
        if (!edgefn__head(r, &mt, &v)) return false;
        pending--;
        if (mt == EDGEFN__BSTR || mt == EDGEFN__TSTR) {
            r->p += v;
            r->n -= (size_t)v;
        } else if (mt == EDGEFN__ARR || mt == EDGEFN__MAP) {
            pending += mt == EDGEFN__MAP ? 2u * v : v; /* v <= n < 2^32: no overflow */
        }
        if (pending > r->n) return false; /* each pending item needs at least one byte */
    }
    return true;
}

EDGEFN__FN bool edgefn__expect(edgefn__rd *r, int major, uint64_t *val) {
    int mt;
    return edgefn__head(r, &mt, val) && mt == major;
}

EDGEFN__FN bool edgefn__read_str(edgefn__rd *r, int major, edgefn_str *out) {
    uint64_t v;
    if (!edgefn__expect(r, major, &v)) return false;
    out->ptr = (const char *)r->p;
    out->len = (size_t)v;
    r->p += v;
    r->n -= (size_t)v;
    return true;
}

EDGEFN__FN bool edgefn__read_bool(edgefn__rd *r, bool *out) {
    uint64_t v;
    if (!edgefn__expect(r, EDGEFN__SIMPLE, &v) || v == 22) return false;
    *out = v == 21;
    return true;
}

EDGEFN__FN bool edgefn__read_map(edgefn__rd *r, uint32_t *count) {
    uint64_t v;
    if (!edgefn__expect(r, EDGEFN__MAP, &v)) return false;
    *count = (uint32_t)v; /* v <= bytes left < 2^32 */
    return true;
}

/* ------------------------------------------------------------------------------------------------ */
/* Event parsing                                                                                    */
/* ------------------------------------------------------------------------------------------------ */

static const edgefn_str edgefn__empty = { "", 0 };

/* headers = { * tstr => [ * { "key": tstr, "value": tstr, * tstr => any } ] }; "value" required. */
EDGEFN__FN bool edgefn__parse_headers(edgefn__rd *r, edgefn_headers *h) {
    const uint8_t *start = r->p;
    uint32_t names;
    if (!edgefn__read_map(r, &names)) return false;
    for (uint32_t i = 0; i < names; i++) {
        edgefn_str name;
        uint64_t nvals;
        if (!edgefn__read_str(r, EDGEFN__TSTR, &name) || !edgefn__expect(r, EDGEFN__ARR, &nvals)) return false;
        for (uint64_t j = 0; j < nvals; j++) {
            uint32_t fields;
            bool has_value = false;
            if (!edgefn__read_map(r, &fields)) return false;
            for (uint32_t f = 0; f < fields; f++) {
                edgefn_str k, v;
                if (!edgefn__read_str(r, EDGEFN__TSTR, &k)) return false;
                bool is_value = EDGEFN__IS(k, "value");
                if (is_value || EDGEFN__IS(k, "key")) {
                    if (!edgefn__read_str(r, EDGEFN__TSTR, &v)) return false;
                    has_value |= is_value;
                } else if (!edgefn__skip(r)) {
                    return false;
                }
            }
            if (!has_value) return false;
        }
    }
    h->cbor = start;
    h->len = (size_t)(r->p - start);
    return true;
}

/* The event is read by one table-driven walk. Every destination is an offset into edgefn_event;
   a field with another CBOR type than its table says fails the event, unknown keys are skipped. */
enum { EDGEFN__F_TSTR, EDGEFN__F_BSTR, EDGEFN__F_BOOL, EDGEFN__F_STATUS, EDGEFN__F_HEADERS, EDGEFN__F_MAP };
#define EDGEFN__NOFLAG 0xFFFFu

typedef struct edgefn__fd {
    const char *key;               /* NULL ends a table */
    size_t klen;
    const struct edgefn__fd *sub;  /* F_MAP: the nested table */
    uint16_t off;                  /* destination */
    uint16_t flag;                 /* bool set when the key is present, or EDGEFN__NOFLAG */
    uint8_t kind;
} edgefn__fd;

#define EDGEFN__OFF(member) ((uint16_t)offsetof(edgefn_event, member))
#define EDGEFN__KEY(key) key, sizeof(key) - 1
#define EDGEFN__FIELD(key, kind, member) { EDGEFN__KEY(key), NULL, EDGEFN__OFF(member), EDGEFN__NOFLAG, kind }

static const edgefn__fd edgefn__t_config[] = {
    EDGEFN__FIELD("eventType", EDGEFN__F_TSTR, event_type),
    EDGEFN__FIELD("requestId", EDGEFN__F_TSTR, request_id),
    EDGEFN__FIELD("distributionDomainName", EDGEFN__F_TSTR, distribution_domain_name),
    EDGEFN__FIELD("distributionId", EDGEFN__F_TSTR, distribution_id),
    EDGEFN__FIELD("functionName", EDGEFN__F_TSTR, function_name),
    { NULL, 0, NULL, 0, 0, 0 }
};
static const edgefn__fd edgefn__t_request_body[] = {
    EDGEFN__FIELD("data", EDGEFN__F_BSTR, request.body.data),
    EDGEFN__FIELD("inputTruncated", EDGEFN__F_BOOL, request.body.truncated),
    { NULL, 0, NULL, 0, 0, 0 }
};
static const edgefn__fd edgefn__t_response_body[] = {
    EDGEFN__FIELD("data", EDGEFN__F_BSTR, response.body.data),
    EDGEFN__FIELD("inputTruncated", EDGEFN__F_BOOL, response.body.truncated),
    { NULL, 0, NULL, 0, 0, 0 }
};
static const edgefn__fd edgefn__t_request[] = {
    EDGEFN__FIELD("clientIp", EDGEFN__F_TSTR, request.client_ip),
    EDGEFN__FIELD("method", EDGEFN__F_TSTR, request.method),
    EDGEFN__FIELD("uri", EDGEFN__F_TSTR, request.uri),
    EDGEFN__FIELD("querystring", EDGEFN__F_TSTR, request.querystring),
    EDGEFN__FIELD("headers", EDGEFN__F_HEADERS, request.headers),
    { EDGEFN__KEY("body"), edgefn__t_request_body, 0, EDGEFN__OFF(request.body.present), EDGEFN__F_MAP },
    { NULL, 0, NULL, 0, 0, 0 } /* "origin" and anything newer: skipped */
};
static const edgefn__fd edgefn__t_response[] = {
    EDGEFN__FIELD("status", EDGEFN__F_STATUS, response.status),
    EDGEFN__FIELD("statusDescription", EDGEFN__F_TSTR, response.status_description),
    EDGEFN__FIELD("headers", EDGEFN__F_HEADERS, response.headers),
    { EDGEFN__KEY("body"), edgefn__t_response_body, 0, EDGEFN__OFF(response.body.present), EDGEFN__F_MAP },
    { NULL, 0, NULL, 0, 0, 0 }
};
static const edgefn__fd edgefn__t_event[] = {
    { EDGEFN__KEY("config"), edgefn__t_config, 0, EDGEFN__NOFLAG, EDGEFN__F_MAP },
    { EDGEFN__KEY("request"), edgefn__t_request, 0, EDGEFN__NOFLAG, EDGEFN__F_MAP },
    { EDGEFN__KEY("response"), edgefn__t_response, 0, EDGEFN__OFF(has_response), EDGEFN__F_MAP },
    { NULL, 0, NULL, 0, 0, 0 }
};

/* Reads one map described by table t into ev. Recursion depth is bounded by the tables (3). */
EDGEFN__FN bool edgefn__parse_map(edgefn__rd *r, const edgefn__fd *t, edgefn_event *ev) {
    uint32_t fields;
    char *base = (char *)ev;
    if (!edgefn__read_map(r, &fields)) return false;
    for (uint32_t i = 0; i < fields; i++) {
        edgefn_str k;
        const edgefn__fd *f = t;
        uint64_t v = 0;
        bool ok;
        if (!edgefn__read_str(r, EDGEFN__TSTR, &k)) return false;
        while (f->key && !(k.len == f->klen && edgefn__eq(k, (edgefn_str){ f->key, f->klen }, false))) f++;
        void *dst = base + f->off;
        switch (f->key ? f->kind : -1) {
        case EDGEFN__F_TSTR: ok = edgefn__read_str(r, EDGEFN__TSTR, (edgefn_str *)dst); break;
        case EDGEFN__F_BSTR:
            ok = edgefn__read_str(r, EDGEFN__BSTR, &k);
            ((edgefn_bytes *)dst)->ptr = (const uint8_t *)k.ptr;
            ((edgefn_bytes *)dst)->len = k.len;
            break;
        case EDGEFN__F_BOOL: ok = edgefn__read_bool(r, (bool *)dst); break;
        case EDGEFN__F_STATUS:
            ok = edgefn__expect(r, EDGEFN__UINT, &v) && v <= 999;
            *(uint32_t *)dst = (uint32_t)v;
            break;
        case EDGEFN__F_HEADERS: ok = edgefn__parse_headers(r, (edgefn_headers *)dst); break;
        case EDGEFN__F_MAP: ok = edgefn__parse_map(r, f->sub, ev); break;
        default: ok = edgefn__skip(r); break;
        }
        if (!ok) return false;
        if (f->key && f->flag != EDGEFN__NOFLAG) *(bool *)(base + f->flag) = true;
    }
    return true;
}

EDGEFN__FN bool edgefn__parse_event(const uint8_t *p, size_t n, edgefn_event *ev) {
    static const char *const types[] = { "viewer-request", "origin-request", "origin-response", "viewer-response" };
    edgefn__rd r;
    edgefn_str *const strs[] = { &ev->event_type, &ev->request_id, &ev->distribution_domain_name,
                                 &ev->distribution_id, &ev->function_name, &ev->request.client_ip,
                                 &ev->request.method, &ev->request.uri, &ev->request.querystring,
                                 &ev->response.status_description };
    __builtin_memset(ev, 0, sizeof *ev);
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) *strs[i] = edgefn__empty;
    ev->request.body.data.ptr = ev->response.body.data.ptr = (const uint8_t *)"";
    r.p = p;
    r.n = n;
    if (!edgefn__parse_map(&r, edgefn__t_event, ev) || r.n != 0) return false;
    for (int i = 0; i < 4; i++)
        if (edgefn_str_eq(ev->event_type, types[i])) ev->type = (edgefn_event_type)(i + 1);
    return true;
}

/* ------------------------------------------------------------------------------------------------ */
/* Header lookup                                                                                    */
/* ------------------------------------------------------------------------------------------------ */

/* Iterates the values of header `name` (ASCII case-insensitive), or of every header if name is
   NULL, in document order. `name` must stay valid while iterating. */
EDGEFN__FN edgefn_header_iter edgefn_headers_iter(edgefn_headers h, const char *name) {
    edgefn_header_iter it;
    uint32_t names = 0;
    edgefn__rd r;
    r.p = h.cbor;
    r.n = h.cbor ? h.len : 0;
    if (r.n && !edgefn__read_map(&r, &names)) names = 0;
    it.p = r.p;
    it.n = r.n;
    it.names_left = names;
    it.vals_left = 0;
    it.name = edgefn__empty;
    it.filter.ptr = name;
    it.filter.len = edgefn__strlen(name);
    return it;
}

/* Next value; false at the end. */
EDGEFN__FN bool edgefn_headers_next(edgefn_header_iter *it, edgefn_header *out) {
    edgefn__rd r;
    r.p = it->p;
    r.n = it->n;
    for (;;) {
        while (it->vals_left == 0) {
            uint64_t nvals;
            if (it->names_left == 0) return false;
            it->names_left--;
            if (!edgefn__read_str(&r, EDGEFN__TSTR, &it->name) || !edgefn__expect(&r, EDGEFN__ARR, &nvals))
                goto bad;
            if (it->filter.ptr && !edgefn__eq(it->name, it->filter, true)) {
                for (uint64_t i = 0; i < nvals; i++)
                    if (!edgefn__skip(&r)) goto bad;
                nvals = 0;
            }
            it->vals_left = (uint32_t)nvals;
        }
        uint32_t fields;
        it->vals_left--;
        out->name = it->name;
        out->key = it->name;
        out->value = edgefn__empty;
        if (!edgefn__read_map(&r, &fields)) goto bad;
        for (uint32_t f = 0; f < fields; f++) {
            edgefn_str k;
            if (!edgefn__read_str(&r, EDGEFN__TSTR, &k)) goto bad;
            if (EDGEFN__IS(k, "key")) {
                if (!edgefn__read_str(&r, EDGEFN__TSTR, &out->key)) goto bad;
            } else if (EDGEFN__IS(k, "value")) {
                if (!edgefn__read_str(&r, EDGEFN__TSTR, &out->value)) goto bad;
            } else if (!edgefn__skip(&r)) {
                goto bad;
            }
        }
        it->p = r.p;
        it->n = r.n;
        return true;
    }
bad:
    it->names_left = it->vals_left = 0;
    it->n = 0;
    return false;
}

/* First value of header `name` (ASCII case-insensitive); false if absent. */
EDGEFN__FN bool edgefn_header_get(edgefn_headers h, const char *name, edgefn_str *value) {
    edgefn_header_iter it = edgefn_headers_iter(h, name);
    edgefn_header hd;
    if (!edgefn_headers_next(&it, &hd)) return false;
    *value = hd.value;
    return true;
}

/* ------------------------------------------------------------------------------------------------ */
/* CBOR writer (two passes: measure, then write into one arena block)                               */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    uint8_t *buf; /* NULL: measuring */
    uint64_t len;
    uint64_t cap;
    bool overflow;
} edgefn__w;

EDGEFN__FN void edgefn__w_raw(edgefn__w *w, const void *p, size_t n) {
    if (w->buf) {
        if (w->len + n > w->cap) {
            w->overflow = true;
            return;
        }
        if (n) __builtin_memcpy(w->buf + w->len, p, n);
    }
    w->len += n;
}

EDGEFN__FN void edgefn__w_head(edgefn__w *w, int major, uint64_t v) {
    uint8_t h[9];
    size_t n, extra;
    uint8_t ib = (uint8_t)(major << 5);
    if (v < 24) {
        h[0] = (uint8_t)(ib | v);
        extra = 0;
    } else if (v <= 0xFF) {
        h[0] = ib | 24;
        extra = 1;
    } else if (v <= 0xFFFF) {
        h[0] = ib | 25;
        extra = 2;
    } else if (v <= 0xFFFFFFFFu) {
        h[0] = ib | 26;
        extra = 4;
    } else {
        h[0] = ib | 27;
        extra = 8;
    }
    for (n = 0; n < extra; n++) h[1 + n] = (uint8_t)(v >> (8 * (extra - 1 - n)));
    edgefn__w_raw(w, h, 1 + extra);
}

EDGEFN__FN void edgefn__w_str(edgefn__w *w, int major, const void *p, size_t n) {
    edgefn__w_head(w, major, n);
    edgefn__w_raw(w, p, n);
}

EDGEFN__FN void edgefn__w_text(edgefn__w *w, edgefn_str s) { edgefn__w_str(w, EDGEFN__TSTR, s.ptr, s.len); }
#define edgefn__w_lit(w, lit) edgefn__w_text((w), EDGEFN_STR(lit))

typedef void (*edgefn__emit_fn)(edgefn__w *w, const void *ctx);

static const uint8_t edgefn__oom_doc[] =
    "\xa2"
    "\x69" "errorType"
    "\x6b" "OutOfMemory"
    "\x6c" "errorMessage"
    "\x75" "guest arena exhausted";

EDGEFN__FN edgefn_result edgefn__oom_result(void) {
    edgefn_result r;
    edgefn__oom = true;
    r.ptr = edgefn__oom_doc;
    r.len = sizeof edgefn__oom_doc - 1;
    return r;
}

EDGEFN__FN edgefn_result edgefn__encode(edgefn__emit_fn emit, const void *ctx) {
    edgefn__w w = { NULL, 0, 0, false };
    edgefn_result r;
    emit(&w, ctx);
    if (w.len == 0 || w.len > 0xFFFF0000u) return edgefn__oom_result();
    uint8_t *buf = (uint8_t *)edgefn__alloc((size_t)w.len);
    if (!buf) return edgefn__oom_result();
    edgefn__w w2 = { buf, 0, w.len, false };
    emit(&w2, ctx);
    if (w2.overflow || w2.len != w.len) return edgefn__oom_result(); /* cannot happen */
    r.ptr = buf;
    r.len = (size_t)w.len;
    return r;
}

/* ------------------------------------------------------------------------------------------------ */
/* Results                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    edgefn_str type, message;
} edgefn__err;

EDGEFN__FN void edgefn__emit_error(edgefn__w *w, const void *ctx) {
    const edgefn__err *e = (const edgefn__err *)ctx;
    edgefn__w_head(w, EDGEFN__MAP, 2);
    edgefn__w_lit(w, "errorType");
    edgefn__w_text(w, e->type);
    edgefn__w_lit(w, "errorMessage");
    edgefn__w_text(w, e->message);
}

/* A function error {"errorType": type, "errorMessage": message}; the host raises FunctionError. */
EDGEFN__FN edgefn_result edgefn_error(const char *type, const char *message) {
    edgefn__err e;
    e.type = edgefn_cstr(type && *type ? type : "Error");
    e.message = edgefn_cstr(message);
    return edgefn__encode(edgefn__emit_error, &e);
}

enum { EDGEFN__OUT_REQUEST = 1, EDGEFN__OUT_RESPONSE = 2 };
enum { EDGEFN__HOP_SET = 1, EDGEFN__HOP_ADD = 2, EDGEFN__HOP_REMOVE = 3 };
enum { EDGEFN__SET_URI = 1, EDGEFN__SET_QS = 2, EDGEFN__SET_METHOD = 4 };
enum { EDGEFN__BODY_NONE = 0, EDGEFN__BODY_BYTES = 1, EDGEFN__BODY_TEXT = 2 };

EDGEFN__FN bool edgefn__is_response_event(const edgefn_event *ev) {
    if (ev->type == EDGEFN_ORIGIN_RESPONSE || ev->type == EDGEFN_VIEWER_RESPONSE) return true;
    if (ev->type == EDGEFN_EVENT_UNKNOWN) return ev->has_response;
    return false;
}

EDGEFN__FN edgefn_out edgefn__out(int kind) {
    edgefn_out o;
    __builtin_memset(&o, 0, sizeof o);
    o.kind = kind;
    o.uri = o.querystring = o.method = o.description = edgefn__empty;
    return o;
}

EDGEFN__FN void edgefn__misuse(edgefn_out *o, const char *what) {
    if (!o->misuse) o->misuse = what;
}

EDGEFN__FN edgefn_str edgefn__dup(edgefn_out *o, edgefn_str s) {
    char *p = (char *)edgefn__alloc(s.len + 1);
    if (!p) {
        o->failed = true;
        return edgefn__empty;
    }
    if (s.len) __builtin_memcpy(p, s.ptr, s.len);
    p[s.len] = 0;
    s.ptr = p;
    return s;
}

/* Continue with the incoming request, changed by the edgefn_set_* / header calls that follow.
   Request triggers only (viewer-request, origin-request). */
EDGEFN__FN edgefn_out edgefn_edit_request(const edgefn_event *ev) {
    edgefn_out o = edgefn__out(EDGEFN__OUT_REQUEST);
    o.base = ev->request.headers;
    if (edgefn__is_response_event(ev))
        edgefn__misuse(&o, "edgefn_edit_request() in a response trigger: return a response");
    return o;
}

/* A new response: in a request trigger it short-circuits (the origin is not called); in a response
   trigger it replaces the response. description may be NULL (the host picks the reason phrase). */
EDGEFN__FN edgefn_out edgefn_new_response(uint32_t status, const char *description) {
    edgefn_out o = edgefn__out(EDGEFN__OUT_RESPONSE);
    o.status = status;
    if (status < 100 || status > 599) edgefn__misuse(&o, "response status must be 100..599");
    if (description) {
        o.has_description = true;
        o.description = edgefn__dup(&o, edgefn_cstr(description));
    }
    return o;
}

/* The incoming response of a response trigger (origin-response, viewer-response), to be changed:
   status, description and all headers (with your edits) are re-emitted. The body is not: per
   ABI.md §5 an absent body keeps the incoming one, so the origin body never crosses back (and a
   truncated one is never cut) unless you set another with edgefn_set_body*. */
EDGEFN__FN edgefn_out edgefn_edit_response(const edgefn_event *ev) {
    edgefn_out o = edgefn__out(EDGEFN__OUT_RESPONSE);
    if (!ev->has_response) {
        edgefn__misuse(&o, "edgefn_edit_response() without a response in the event: use edgefn_new_response()");
        return o;
    }
    o.status = ev->response.status;
    o.has_description = true;
    o.description = ev->response.status_description;
    o.base = ev->response.headers;
    o.emit_headers = true;
    if (o.status < 100 || o.status > 599) edgefn__misuse(&o, "response status must be 100..599");
    return o;
}

/* Request results: change the uri (path, must start with "/") or the querystring (without "?"). */
EDGEFN__FN void edgefn_set_uri(edgefn_out *o, edgefn_str uri) {
    if (o->kind != EDGEFN__OUT_REQUEST) edgefn__misuse(o, "edgefn_set_uri() on a response");
    if (uri.len == 0 || uri.ptr[0] != '/') edgefn__misuse(o, "uri must start with '/'");
    o->uri = edgefn__dup(o, uri);
    o->set_mask |= EDGEFN__SET_URI;
}

EDGEFN__FN void edgefn_set_querystring(edgefn_out *o, edgefn_str querystring) {
    if (o->kind != EDGEFN__OUT_REQUEST) edgefn__misuse(o, "edgefn_set_querystring() on a response");
    o->querystring = edgefn__dup(o, querystring);
    o->set_mask |= EDGEFN__SET_QS;
}

EDGEFN__FN void edgefn_set_method(edgefn_out *o, const char *method) {
    if (o->kind != EDGEFN__OUT_REQUEST) edgefn__misuse(o, "edgefn_set_method() on a response");
    o->method = edgefn__dup(o, edgefn_cstr(method));
    if (o->method.len == 0) edgefn__misuse(o, "empty method");
    o->set_mask |= EDGEFN__SET_METHOD;
}

/* Response results: change the status (100..599) and description (NULL: host default). */
EDGEFN__FN void edgefn_set_status(edgefn_out *o, uint32_t status, const char *description) {
    if (o->kind != EDGEFN__OUT_RESPONSE) edgefn__misuse(o, "edgefn_set_status() on a request");
    if (status < 100 || status > 599) edgefn__misuse(o, "response status must be 100..599");
    o->status = status;
    o->has_description = description != NULL;
    o->description = description ? edgefn__dup(o, edgefn_cstr(description)) : edgefn__empty;
}

EDGEFN__FN bool edgefn__tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    for (const char *t = "!#$%&'*+-.^_`|~"; *t; t++)
        if (c == *t) return true;
    return false;
}

EDGEFN__FN void edgefn__hop_push(edgefn_out *o, int kind, const char *name, edgefn_str value) {
    edgefn_str key = edgefn_cstr(name);
    if (o->failed || o->misuse) return;
    const char *bad = key.len == 0 ? "empty header name" : NULL;
    for (size_t i = 0; i < key.len; i++)
        if (!edgefn__tchar(key.ptr[i])) bad = "invalid character in header name";
    for (size_t i = 0; i < value.len; i++)
        if (value.ptr[i] == '\r' || value.ptr[i] == '\n' || value.ptr[i] == 0) bad = "CR, LF or NUL in header value";
    if (bad) {
        edgefn__misuse(o, bad);
        return;
    }
    /* one block: node, lowercase name, name as given, value */
    size_t need = sizeof(edgefn__hop) + 2 * key.len + value.len;
    edgefn__hop *h = (edgefn__hop *)edgefn__alloc(need);
    if (!h) {
        o->failed = true;
        return;
    }
    char *s = (char *)(h + 1);
    for (size_t i = 0; i < key.len; i++) s[i] = edgefn__lower(key.ptr[i]);
    __builtin_memcpy(s + key.len, key.ptr, key.len);
    if (value.len) __builtin_memcpy(s + 2 * key.len, value.ptr, value.len);
    h->next = NULL;
    h->kind = kind;
    h->lname.ptr = s;
    h->lname.len = key.len;
    h->key.ptr = s + key.len;
    h->key.len = key.len;
    h->value.ptr = s + 2 * key.len;
    h->value.len = value.len;
    if (o->ops_tail) o->ops_tail->next = h;
    else o->ops = h;
    o->ops_tail = h;
}

/* Header edits, applied in call order on top of the incoming headers (edit_*) or an empty set
   (new_response). `name` is emitted as given ("Content-Type") under its lowercase map key.
   set: replace every value of the header with this one; add: append one more value;
   remove: drop every value. Strings are copied. */
EDGEFN__FN void edgefn_set_header_str(edgefn_out *o, const char *name, edgefn_str value) {
    edgefn__hop_push(o, EDGEFN__HOP_SET, name, value);
}
EDGEFN__FN void edgefn_add_header_str(edgefn_out *o, const char *name, edgefn_str value) {
    edgefn__hop_push(o, EDGEFN__HOP_ADD, name, value);
}
EDGEFN__FN void edgefn_set_header(edgefn_out *o, const char *name, const char *value) {
    edgefn__hop_push(o, EDGEFN__HOP_SET, name, edgefn_cstr(value));
}
EDGEFN__FN void edgefn_add_header(edgefn_out *o, const char *name, const char *value) {
    edgefn__hop_push(o, EDGEFN__HOP_ADD, name, edgefn_cstr(value));
}
EDGEFN__FN void edgefn_remove_header(edgefn_out *o, const char *name) {
    edgefn__hop_push(o, EDGEFN__HOP_REMOVE, name, edgefn__empty);
}

/* The body to send (bytes, or UTF-8 text). Not copied: it must stay valid until edgefn_finish
   (the event buffer, arena memory and static data all do). On a request result this replaces the
   request body sent to the origin. */
EDGEFN__FN void edgefn_set_body(edgefn_out *o, const void *data, size_t len) {
    o->body_kind = EDGEFN__BODY_BYTES;
    o->body = data ? data : "";
    o->body_len = data ? len : 0;
}
EDGEFN__FN void edgefn_set_body_str(edgefn_out *o, edgefn_str text) {
    o->body_kind = EDGEFN__BODY_TEXT;
    o->body = text.ptr ? text.ptr : "";
    o->body_len = text.ptr ? text.len : 0;
}
EDGEFN__FN void edgefn_set_body_text(edgefn_out *o, const char *text) { edgefn_set_body_str(o, edgefn_cstr(text)); }

/* --- header map emission: incoming headers + edits ----------------------------------------------- */

/* edgefn_finish first computes a plan (once), then the encoder emits it twice (measure, write):
   - every op gets `same` (the next op of its name) and `first` (no earlier op has its name);
   - the first op of a name holds the name's final state: keep (the incoming values stay), from (the
     first op whose value counts: the last set/remove, or the first op) and nvals (values from ops);
   - the incoming map is walked once into an array of entries, each linked to its name's first op. */
typedef struct {
    edgefn_str name;
    const uint8_t *entry;  /* name item start */
    const uint8_t *values; /* first array element */
    const uint8_t *end;    /* end of the array */
    uint32_t nvals;
    const edgefn__hop *op; /* first op of this name, or NULL: copied as it came */
} edgefn__bent;

typedef struct {
    const edgefn_out *o;
    edgefn__bent *base;
    uint32_t nbase;
} edgefn__plan;

EDGEFN__FN bool edgefn__same_name(edgefn_str a, edgefn_str b) {
    /* op names are lowercased by the SDK and the ABI sends lowercase keys; fold only if needed */
    return a.len == b.len && (edgefn__eq(a, b, false) || edgefn__eq(a, b, true));
}

EDGEFN__FN bool edgefn__plan_make(edgefn_out *o, edgefn__plan *plan) {
    edgefn__hop *h, *g;
    plan->o = o;
    plan->base = NULL;
    plan->nbase = 0;
    for (h = o->ops; h; h = h->next) {
        h->first = true;
        h->same = NULL;
        h->in_base = false;
    }
    for (h = o->ops; h; h = h->next) {
        if (!h->first) continue;
        edgefn__hop *last = h, *reset = NULL;
        for (g = h; g; g = g->next) {
            if (g != h) {
                if (!g->first || !edgefn__same_name(g->lname, h->lname)) continue;
                g->first = false;
                last->same = g;
                last = g;
            }
            if (g->kind != EDGEFN__HOP_ADD) reset = g;
        }
        h->keep = reset == NULL;
        h->from = reset ? reset : h;
        h->nvals = 0;
        for (g = h->from; g; g = g->same) h->nvals += g->kind != EDGEFN__HOP_REMOVE;
    }
    edgefn__rd r;
    uint32_t left = 0;
    r.p = o->base.cbor;
    r.n = o->base.cbor ? o->base.len : 0;
    if (r.n && !edgefn__read_map(&r, &left)) return false;
    if (left) {
        plan->base = (edgefn__bent *)edgefn__alloc((size_t)left * sizeof(edgefn__bent));
        if (!plan->base) return false;
    }
    for (; left; left--) {
        edgefn__bent *e = &plan->base[plan->nbase];
        uint64_t nvals;
        e->entry = r.p;
        if (!edgefn__read_str(&r, EDGEFN__TSTR, &e->name) || !edgefn__expect(&r, EDGEFN__ARR, &nvals)) return false;
        e->values = r.p;
        for (uint64_t i = 0; i < nvals; i++)
            if (!edgefn__skip(&r)) return false;
        e->end = r.p;
        e->nvals = (uint32_t)nvals;
        e->op = NULL;
        for (h = o->ops; h && !e->op; h = h->next)
            if (h->first && edgefn__same_name(e->name, h->lname)) {
                e->op = h;
                h->in_base = true;
            }
        plan->nbase++;
    }
    return true;
}

EDGEFN__FN void edgefn__emit_hop_values(edgefn__w *w, const edgefn__hop *first) {
    for (const edgefn__hop *h = first->from; h; h = h->same) {
        if (h->kind == EDGEFN__HOP_REMOVE) continue;
        edgefn__w_head(w, EDGEFN__MAP, 2);
        edgefn__w_lit(w, "key");
        edgefn__w_text(w, h->key);
        edgefn__w_lit(w, "value");
        edgefn__w_text(w, h->value);
    }
}

/* Emits (or with count_only, counts) the entries of the final header map. */
EDGEFN__FN uint32_t edgefn__emit_header_entries(edgefn__w *w, const edgefn__plan *plan, bool count_only) {
    uint32_t count = 0;
    for (uint32_t i = 0; i < plan->nbase; i++) {
        const edgefn__bent *e = &plan->base[i];
        const edgefn__hop *op = e->op;
        uint32_t total = op ? op->nvals + (op->keep ? e->nvals : 0) : e->nvals;
        if (total == 0) continue;
        count++;
        if (count_only) continue;
        if (!op) { /* untouched: copy the CBOR bytes as they came */
            edgefn__w_raw(w, e->entry, (size_t)(e->end - e->entry));
            continue;
        }
        edgefn__w_text(w, e->name);
        edgefn__w_head(w, EDGEFN__ARR, total);
        if (op->keep) edgefn__w_raw(w, e->values, (size_t)(e->end - e->values));
        edgefn__emit_hop_values(w, op);
    }
    for (const edgefn__hop *h = plan->o->ops; h; h = h->next) { /* new names, in order of first mention */
        if (!h->first || h->in_base || h->nvals == 0) continue;
        count++;
        if (count_only) continue;
        edgefn__w_text(w, h->lname);
        edgefn__w_head(w, EDGEFN__ARR, h->nvals);
        edgefn__emit_hop_values(w, h);
    }
    return count;
}

EDGEFN__FN void edgefn__emit_headers(edgefn__w *w, const edgefn__plan *plan) {
    edgefn__w_lit(w, "headers");
    edgefn__w_head(w, EDGEFN__MAP, edgefn__emit_header_entries(w, plan, true));
    edgefn__emit_header_entries(w, plan, false);
}

EDGEFN__FN void edgefn__emit_body_value(edgefn__w *w, const edgefn_out *o) {
    edgefn__w_str(w, o->body_kind == EDGEFN__BODY_TEXT ? EDGEFN__TSTR : EDGEFN__BSTR, o->body, o->body_len);
}

EDGEFN__FN void edgefn__emit_out(edgefn__w *w, const void *ctx) {
    const edgefn__plan *plan = (const edgefn__plan *)ctx;
    const edgefn_out *o = plan->o;
    bool headers = o->ops != NULL || o->emit_headers;
    bool body = o->body_kind != EDGEFN__BODY_NONE;
    if (o->kind == EDGEFN__OUT_REQUEST) {
        uint32_t n = (uint32_t)headers + (uint32_t)body;
        for (unsigned m = o->set_mask; m; m >>= 1) n += m & 1u;
        edgefn__w_head(w, EDGEFN__MAP, n);
        if (o->set_mask & EDGEFN__SET_URI) { edgefn__w_lit(w, "uri"); edgefn__w_text(w, o->uri); }
        if (o->set_mask & EDGEFN__SET_QS) { edgefn__w_lit(w, "querystring"); edgefn__w_text(w, o->querystring); }
        if (o->set_mask & EDGEFN__SET_METHOD) { edgefn__w_lit(w, "method"); edgefn__w_text(w, o->method); }
        if (headers) edgefn__emit_headers(w, plan);
        if (body) {
            edgefn__w_lit(w, "body");
            edgefn__w_head(w, EDGEFN__MAP, 2);
            edgefn__w_lit(w, "action");
            edgefn__w_lit(w, "replace");
            edgefn__w_lit(w, "data");
            edgefn__emit_body_value(w, o);
        }
        return;
    }
    edgefn__w_head(w, EDGEFN__MAP, 1u + (uint32_t)o->has_description + (uint32_t)headers + (uint32_t)body);
    edgefn__w_lit(w, "status");
    edgefn__w_head(w, EDGEFN__UINT, o->status);
    if (o->has_description) { edgefn__w_lit(w, "statusDescription"); edgefn__w_text(w, o->description); }
    if (headers) edgefn__emit_headers(w, plan);
    if (body) { edgefn__w_lit(w, "body"); edgefn__emit_body_value(w, o); }
}

/* Encodes the result. Returns an EdgefnUsageError function error if the builder was misused and
   the OutOfMemory error if memory ran out. */
EDGEFN__FN edgefn_result edgefn_finish(edgefn_out *o) {
    if (o->misuse) return edgefn_error("EdgefnUsageError", o->misuse);
    edgefn__plan plan;
    if (o->failed || !edgefn__plan_make(o, &plan)) return edgefn__oom_result();
    return edgefn__encode(edgefn__emit_out, &plan);
}

static const uint8_t edgefn__empty_map[1] = { 0xa0 };

/* Pass-through. Request triggers: continue with the request unchanged (the result is `{}`).
   Response triggers: return the incoming response unchanged (the result is `{"status": <its status>}`: a
   field left out keeps the incoming value, ABI.md, so the host has nothing to decode or check). */
EDGEFN__FN edgefn_result edgefn_continue(const edgefn_event *ev) {
    if (edgefn__is_response_event(ev)) {
        uint32_t status = ev->has_response ? ev->response.status : 0;
        if (status < 100 || status > 599) {  /* the misuse, reported as edgefn_edit_response reports it */
            edgefn_out o = edgefn_edit_response(ev);
            return edgefn_finish(&o);
        }
        static uint8_t unchanged[11] = { 0xa1, 0x66, 's', 't', 'a', 't', 'u', 's' };
        edgefn_result r;
        r.ptr = unchanged;
        if (status < 256) {  /* CBOR's shortest head: one byte after 0x18, two after 0x19 */
            unchanged[8] = 0x18;
            unchanged[9] = (uint8_t)status;
            r.len = 10;
        } else {
            unchanged[8] = 0x19;
            unchanged[9] = (uint8_t)(status >> 8);
            unchanged[10] = (uint8_t)status;
            r.len = 11;
        }
        return r;
    }
    edgefn_result r;
    r.ptr = edgefn__empty_map;
    r.len = 1;
    return r;
}

/* A complete response in one call: status, content type (NULL: none) and a text body (NULL: none). */
EDGEFN__FN edgefn_result edgefn_respond(uint32_t status, const char *content_type, const char *body) {
    edgefn_out o = edgefn_new_response(status, NULL);
    if (content_type) edgefn_set_header(&o, "Content-Type", content_type);
    if (body) edgefn_set_body_text(&o, body);
    return edgefn_finish(&o);
}

/* ------------------------------------------------------------------------------------------------ */
/* Outbound fetch (edgefn:host/v1.fetch / fetch_result, ABI.md section 3)                           */
/* ------------------------------------------------------------------------------------------------ */

/* A request `method` (NULL: "GET") to `url` (http:// or https://, its host must be in the manifest's
   allowed_hosts). Both are copied. Problems (a bad method or url, memory) are reported by
   edgefn_fetch_send, so the builder calls need no checks. */
EDGEFN__FN edgefn_fetch_request edgefn_fetch_new_str(const char *method, edgefn_str url) {
    edgefn_fetch_request q;
    __builtin_memset(&q, 0, sizeof q);
    q.hdrs = edgefn__out(0);
    q.method = edgefn__dup(&q.hdrs, method ? edgefn_cstr(method) : EDGEFN_STR("GET"));
    q.url = edgefn__dup(&q.hdrs, url.ptr ? url : edgefn__empty);
    q.body = "";
    if (q.method.len == 0) edgefn__misuse(&q.hdrs, "fetch: empty method");
    for (size_t i = 0; i < q.method.len; i++)
        if (!edgefn__tchar(q.method.ptr[i])) edgefn__misuse(&q.hdrs, "fetch: invalid character in method");
    if (q.url.len == 0) edgefn__misuse(&q.hdrs, "fetch: empty url");
    for (size_t i = 0; i < q.url.len; i++)
        if ((uint8_t)q.url.ptr[i] <= 0x20 || (uint8_t)q.url.ptr[i] == 0x7f)
            edgefn__misuse(&q.hdrs, "fetch: space or control character in url");
    return q;
}

EDGEFN__FN edgefn_fetch_request edgefn_fetch_new(const char *method, const char *url) {
    return edgefn_fetch_new_str(method, edgefn_cstr(url));
}

/* Adds one request header value (a repeated name sends every value, in call order). The same
   checks as edgefn_add_header: an HTTP token name, no CR, LF or NUL in the value. Copied. */
EDGEFN__FN void edgefn_fetch_header_str(edgefn_fetch_request *req, const char *name, edgefn_str value) {
    edgefn__hop_push(&req->hdrs, EDGEFN__HOP_ADD, name, value);
}
EDGEFN__FN void edgefn_fetch_header(edgefn_fetch_request *req, const char *name, const char *value) {
    edgefn__hop_push(&req->hdrs, EDGEFN__HOP_ADD, name, edgefn_cstr(value));
}

/* The request body (bytes). Not copied: it must stay valid until edgefn_fetch_send returns. */
EDGEFN__FN void edgefn_fetch_body(edgefn_fetch_request *req, const void *data, size_t len) {
    req->has_body = true;
    req->body = data ? data : "";
    req->body_len = data ? len : 0;
}

typedef struct {
    const edgefn_fetch_request *req;
    edgefn__plan plan;
} edgefn__fetch_doc;

/* {"method": tstr, "url": tstr, ? "headers": headers, ? "body": bstr} */
EDGEFN__FN void edgefn__emit_fetch(edgefn__w *w, const void *ctx) {
    const edgefn__fetch_doc *d = (const edgefn__fetch_doc *)ctx;
    const edgefn_fetch_request *q = d->req;
    bool headers = q->hdrs.ops != NULL;
    edgefn__w_head(w, EDGEFN__MAP, 2u + (uint32_t)headers + (uint32_t)q->has_body);
    edgefn__w_lit(w, "method");
    edgefn__w_text(w, q->method);
    edgefn__w_lit(w, "url");
    edgefn__w_text(w, q->url);
    if (headers) edgefn__emit_headers(w, &d->plan);
    if (q->has_body) {
        edgefn__w_lit(w, "body");
        edgefn__w_str(w, EDGEFN__BSTR, q->body, q->body_len);
    }
}

/* {"status": uint, ? "headers": headers, ? "body": bstr / tstr} or {"error": tstr}, read in place
   with the event's checks (definite lengths, no tags or floats, no trailing bytes). */
EDGEFN__FN bool edgefn__parse_fetch_result(const uint8_t *p, size_t n, edgefn_fetch_response *out) {
    edgefn__rd r;
    uint32_t fields;
    bool has_status = false, has_error = false;
    r.p = p;
    r.n = n;
    if (!edgefn__read_map(&r, &fields)) return false;
    for (uint32_t i = 0; i < fields; i++) {
        edgefn_str k;
        uint64_t v;
        int mt;
        if (!edgefn__read_str(&r, EDGEFN__TSTR, &k)) return false;
        if (EDGEFN__IS(k, "status")) {
            if (!edgefn__expect(&r, EDGEFN__UINT, &v) || v > 999) return false;
            out->status = (uint32_t)v;
            has_status = true;
        } else if (EDGEFN__IS(k, "headers")) {
            if (!edgefn__parse_headers(&r, &out->headers)) return false;
        } else if (EDGEFN__IS(k, "body")) {
            if (!edgefn__head(&r, &mt, &v) || (mt != EDGEFN__BSTR && mt != EDGEFN__TSTR)) return false;
            out->body.ptr = r.p; /* edgefn__head checked that the payload fits */
            out->body.len = (size_t)v;
            r.p += v;
            r.n -= (size_t)v;
        } else if (EDGEFN__IS(k, "error")) {
            if (!edgefn__read_str(&r, EDGEFN__TSTR, &out->error)) return false;
            has_error = true;
        } else if (!edgefn__skip(&r)) {
            return false;
        }
    }
    if (r.n != 0 || (!has_status && !has_error)) return false;
    out->ok = !has_error;
    if (has_error) { /* an error document: nothing else counts */
        out->status = 0;
        out->headers.cbor = NULL;
        out->headers.len = 0;
        out->body.ptr = (const uint8_t *)"";
        out->body.len = 0;
    }
    return true;
}

EDGEFN__FN bool edgefn__fetch_fail(edgefn_fetch_response *out, const char *why) {
    out->ok = false;
    out->status = 0;
    out->headers.cbor = NULL;
    out->headers.len = 0;
    out->body.ptr = (const uint8_t *)"";
    out->body.len = 0;
    out->error = edgefn_cstr(why);
    return false;
}

/* Sends the request through the host (blocking; at most the invocation's remaining time) and
   fills *out. true: out->ok, a response with out->status (any status, 4xx/5xx too). false: no
   response, out->error says why: the host's reason (the url's host is not in allowed_hosts, not an
   http(s) url, timed out, unreachable, over 6 MiB, more than 50 fetches) or the SDK's (misuse of
   the builder, out of memory). A failed fetch never fails the invocation by itself. The response
   stays valid until edgefn_main returns; each fetch takes its own arena block (the response
   document, about the body's size plus the headers). */
EDGEFN__FN bool edgefn_fetch_send(edgefn_fetch_request *req, edgefn_fetch_response *out) {
    edgefn__fetch_doc d;
    (void)edgefn__fetch_fail(out, NULL); /* *out is defined on every path */
    if (req->hdrs.failed) return edgefn__fetch_fail(out, "fetch: out of memory building the request");
    if (req->hdrs.misuse) return edgefn__fetch_fail(out, req->hdrs.misuse);
    if (edgefn__top == 0) edgefn__arena_reset();
    edgefn__mark mark = edgefn__arena_mark();
    d.req = req;
    if (!edgefn__plan_make(&req->hdrs, &d.plan)) return edgefn__fetch_fail(out, "fetch: out of memory building the request");

    /* encode the request (measure, then write) into a block that is given back after the call */
    edgefn__w w = { NULL, 0, 0, false };
    edgefn__emit_fetch(&w, &d);
    uint8_t *doc = w.len <= 0xFFFF0000u ? (uint8_t *)edgefn_arena_alloc((size_t)w.len) : NULL;
    if (!doc) {
        edgefn__arena_restore(mark);
        return edgefn__fetch_fail(out, "fetch: out of memory building the request");
    }
    edgefn__w w2 = { doc, 0, w.len, false };
    edgefn__emit_fetch(&w2, &d);
    if (w2.overflow || w2.len != w.len) { /* cannot happen */
        edgefn__arena_restore(mark);
        return edgefn__fetch_fail(out, "fetch: internal error encoding the request");
    }
    int32_t n = edgefn__host_fetch(doc, (size_t)w.len);
    edgefn__arena_restore(mark); /* the request document is not needed any more */
    if (n <= 0) return edgefn__fetch_fail(out, "fetch: the host could not read the request (fetch returned an error code)");

    /* the host announced the result's exact length: one block, one copy */
    uint8_t *buf = (uint8_t *)edgefn_arena_alloc((size_t)(uint32_t)n);
    if (!buf) return edgefn__fetch_fail(out, "fetch: out of memory: the response does not fit in guest memory (memory_mb)");
    int32_t got = edgefn__host_fetch_result(buf, (size_t)(uint32_t)n);
    if (got != n) {
        edgefn__arena_restore(mark);
        return edgefn__fetch_fail(out, "fetch: the host's fetch_result did not match fetch");
    }
    if (!edgefn__parse_fetch_result(buf, (size_t)(uint32_t)n, out)) {
        edgefn__arena_restore(mark);
        return edgefn__fetch_fail(out, "fetch: malformed result document from the host");
    }
    return out->ok;
}

/* ------------------------------------------------------------------------------------------------ */
/* Key-value store (edgefn:host/v1.kv / kv_result, ABI.md section 3; docs/kv.md)                    */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    const char *op;
    const char *ns;
    edgefn_str key;       /* get, put, delete */
    const void *value;    /* put */
    size_t value_len;
    uint32_t ttl_s;       /* put: 0 = no expiry */
    edgefn_str prefix;    /* list */
    edgefn_str cursor;    /* list: empty = the first page */
    uint32_t limit;       /* list: 0 = the host's default (1,000) */
} edgefn__kv_doc;

/* {"op": tstr, "namespace": tstr, ? "key": bstr, ? "value": bstr, ? "ttl": uint, ? "prefix": bstr,
    ? "cursor": tstr, ? "limit": uint} */
EDGEFN__FN void edgefn__emit_kv(edgefn__w *w, const void *ctx) {
    const edgefn__kv_doc *d = (const edgefn__kv_doc *)ctx;
    bool list = d->op[0] == 'l';
    bool put = d->op[0] == 'p';
    uint32_t fields = 2u + (list ? 1u + (uint32_t)(d->cursor.len > 0) + (uint32_t)(d->limit > 0) : 1u + (put ? 1u + (uint32_t)(d->ttl_s > 0) : 0u));
    edgefn__w_head(w, EDGEFN__MAP, fields);
    edgefn__w_lit(w, "op");
    edgefn__w_text(w, edgefn_cstr(d->op));
    edgefn__w_lit(w, "namespace");
    edgefn__w_text(w, edgefn_cstr(d->ns));
    if (list) {
        edgefn__w_lit(w, "prefix");
        edgefn__w_str(w, EDGEFN__BSTR, d->prefix.ptr, d->prefix.len);
        if (d->cursor.len > 0) {
            edgefn__w_lit(w, "cursor");
            edgefn__w_text(w, d->cursor);
        }
        if (d->limit > 0) {
            edgefn__w_lit(w, "limit");
            edgefn__w_head(w, EDGEFN__UINT, d->limit);
        }
        return;
    }
    edgefn__w_lit(w, "key");
    edgefn__w_str(w, EDGEFN__BSTR, d->key.ptr, d->key.len);
    if (put) {
        edgefn__w_lit(w, "value");
        edgefn__w_str(w, EDGEFN__BSTR, d->value, d->value_len);
        if (d->ttl_s > 0) {
            edgefn__w_lit(w, "ttl");
            edgefn__w_head(w, EDGEFN__UINT, d->ttl_s);
        }
    }
}

/* {"found": bool, ? "value": bstr} / {"ok": true} / {"deleted": bool} / {"keys": [* bstr], ? "cursor": tstr}
   / {"error": tstr}, read in place with the event's checks. */
EDGEFN__FN bool edgefn__parse_kv_result(const uint8_t *p, size_t n, edgefn_kv_result *out) {
    edgefn__rd r;
    uint32_t fields;
    bool has_error = false;
    r.p = p;
    r.n = n;
    if (!edgefn__read_map(&r, &fields)) return false;
    for (uint32_t i = 0; i < fields; i++) {
        edgefn_str k, v;
        uint64_t count;
        if (!edgefn__read_str(&r, EDGEFN__TSTR, &k)) return false;
        if (EDGEFN__IS(k, "found") || EDGEFN__IS(k, "deleted")) {
            if (!edgefn__read_bool(&r, &out->found)) return false;
        } else if (EDGEFN__IS(k, "ok")) {
            bool ignored;
            if (!edgefn__read_bool(&r, &ignored)) return false;
        } else if (EDGEFN__IS(k, "value")) {
            if (!edgefn__read_str(&r, EDGEFN__BSTR, &v)) return false;
            out->value.ptr = (const uint8_t *)v.ptr;
            out->value.len = v.len;
        } else if (EDGEFN__IS(k, "cursor")) {
            if (!edgefn__read_str(&r, EDGEFN__TSTR, &out->cursor)) return false;
        } else if (EDGEFN__IS(k, "keys")) {
            if (!edgefn__expect(&r, EDGEFN__ARR, &count)) return false;
            out->key_count = (uint32_t)count;
            out->keys_at = r.p;
            for (uint64_t j = 0; j < count; j++)
                if (!edgefn__read_str(&r, EDGEFN__BSTR, &v)) return false;
            out->keys_left = (size_t)count;
        } else if (EDGEFN__IS(k, "error")) {
            if (!edgefn__read_str(&r, EDGEFN__TSTR, &out->error)) return false;
            has_error = true;
        } else if (!edgefn__skip(&r)) {
            return false;
        }
    }
    if (r.n != 0) return false;
    out->ok = !has_error;
    return true;
}

EDGEFN__FN bool edgefn__kv_fail(edgefn_kv_result *out, const char *why) {
    out->ok = false;
    out->found = false;
    out->value.ptr = (const uint8_t *)"";
    out->value.len = 0;
    out->cursor = edgefn_cstr(NULL);
    out->error = edgefn_cstr(why);
    out->key_count = 0;
    out->keys_at = NULL;
    out->keys_left = 0;
    return false;
}

/* One call: encode the request (measure, then write), call the host, copy the answer once, read it. */
EDGEFN__FN bool edgefn__kv_call(const edgefn__kv_doc *d, edgefn_kv_result *out) {
    (void)edgefn__kv_fail(out, NULL); /* *out is defined on every path */
    if (edgefn__top == 0) edgefn__arena_reset();
    edgefn__mark mark = edgefn__arena_mark();
    edgefn__w w = { NULL, 0, 0, false };
    edgefn__emit_kv(&w, d);
    uint8_t *doc = w.len <= 0xFFFF0000u ? (uint8_t *)edgefn_arena_alloc((size_t)w.len) : NULL;
    if (!doc) return edgefn__kv_fail(out, "kv: out of memory building the request");
    edgefn__w w2 = { doc, 0, w.len, false };
    edgefn__emit_kv(&w2, d);
    int32_t n = edgefn__host_kv(doc, (size_t)w.len);
    edgefn__arena_restore(mark); /* the request document is not needed any more */
    if (n <= 0) return edgefn__kv_fail(out, "kv: the host could not read the request (kv returned an error code)");
    uint8_t *buf = (uint8_t *)edgefn_arena_alloc((size_t)(uint32_t)n);
    if (!buf) return edgefn__kv_fail(out, "kv: out of memory: the answer does not fit in guest memory (memory_mb)");
    if (edgefn__host_kv_result(buf, (size_t)(uint32_t)n) != n || !edgefn__parse_kv_result(buf, (size_t)(uint32_t)n, out)) {
        edgefn__arena_restore(mark);
        return edgefn__kv_fail(out, "kv: malformed answer from the host");
    }
    return out->ok;
}

/* The value of `key` in namespace `ns`. Returns true when found (out->value); false when absent
   (out->ok) or refused/failed (!out->ok, out->error). */
EDGEFN__FN bool edgefn_kv_get(const char *ns, edgefn_str key, edgefn_kv_result *out) {
    edgefn__kv_doc d = { "get", ns, key, NULL, 0, 0, { "", 0 }, { "", 0 }, 0 };
    return edgefn__kv_call(&d, out) && out->found;
}

/* Sets `key` to `len` bytes at `value`; ttl_s > 0 makes it expire that many seconds from now (at least 1).
   Returns out->ok. */
EDGEFN__FN bool edgefn_kv_put(const char *ns, edgefn_str key, const void *value, size_t len, uint32_t ttl_s, edgefn_kv_result *out) {
    edgefn__kv_doc d = { "put", ns, key, value ? value : "", value ? len : 0, ttl_s, { "", 0 }, { "", 0 }, 0 };
    return edgefn__kv_call(&d, out);
}

/* Removes `key`. Returns out->ok; out->found says whether it had a value. */
EDGEFN__FN bool edgefn_kv_delete(const char *ns, edgefn_str key, edgefn_kv_result *out) {
    edgefn__kv_doc d = { "delete", ns, key, NULL, 0, 0, { "", 0 }, { "", 0 }, 0 };
    return edgefn__kv_call(&d, out);
}

/* The keys starting with `prefix`, in byte order, `limit` at most (0: 1,000), after `cursor` (empty: from the
   first). Returns out->ok; read the keys with edgefn_kv_next_key; out->cursor is empty on the last page. */
EDGEFN__FN bool edgefn_kv_list(const char *ns, edgefn_str prefix, edgefn_str cursor, uint32_t limit, edgefn_kv_result *out) {
    edgefn__kv_doc d = { "list", ns, { "", 0 }, NULL, 0, 0, prefix, cursor, limit };
    return edgefn__kv_call(&d, out);
}

/* The next key of a list page into *key; false when there are no more. */
EDGEFN__FN bool edgefn_kv_next_key(edgefn_kv_result *res, edgefn_str *key) {
    edgefn__rd r;
    if (res->keys_left == 0 || res->keys_at == NULL) return false;
    r.p = res->keys_at;
    r.n = 0xFFFFFFFFu; /* checked when the answer was read */
    if (!edgefn__read_str(&r, EDGEFN__BSTR, key)) return false;
    res->keys_at = r.p;
    res->keys_left--;
    return true;
}

/* ------------------------------------------------------------------------------------------------ */
/* Exports (ABI v1)                                                                                 */
/* ------------------------------------------------------------------------------------------------ */

/* Version marker: never called, its name is the handshake. */
__attribute__((export_name("edgefn_abi_v1"))) void edgefn_abi_v1(void) {}

/* Start of an invocation: recycle the arena and return room for the event (0 if impossible). */
__attribute__((export_name("edgefn_alloc"))) int32_t edgefn_alloc(int32_t size) {
    edgefn__arena_reset();
    return (int32_t)(uintptr_t)edgefn_arena_alloc((size_t)(uint32_t)size);
}

__attribute__((export_name("edgefn_handle"))) int64_t edgefn_handle(int32_t event_ptr, int32_t event_len) {
    uint64_t p = (uint32_t)event_ptr, n = (uint32_t)event_len;
    uint64_t mem = (uint64_t)__builtin_wasm_memory_size(0) * 65536u;
    edgefn_event ev;
    edgefn_result res;
    if (edgefn__top == 0) edgefn__arena_reset();
    if (p == 0 || p + n > mem)
        res = edgefn_error("InvalidEvent", "event buffer out of bounds");
    else if (!edgefn__parse_event((const uint8_t *)(uintptr_t)p, (size_t)n, &ev))
        res = edgefn_error("InvalidEvent", "malformed event document");
    else
        res = edgefn_main(&ev);
    if (edgefn__oom)
        res = edgefn__oom_result();
    else if (!res.ptr || res.len == 0)
        res = edgefn_error("EdgefnUsageError", "edgefn_main returned an empty result");
    return (int64_t)(((uint64_t)(uint32_t)(uintptr_t)res.ptr << 32) | (uint64_t)(uint32_t)res.len);
}

#endif /* EDGEFN_H */
