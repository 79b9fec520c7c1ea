/* numbers: a C origin whose arithmetic comes from the wasm layer mathlib (layers = ["mathlib:1"]).
     GET /fib/<n>    -> the n-th Fibonacci number
     GET /isqrt/<x>  -> the integer square root of x
   Every answer names the layer version in X-Mathlib-Version. */
#include "edgefn.h"

#define LAYER(name) __attribute__((import_module("layer:mathlib"), import_name(name)))
LAYER("fib") uint64_t fib(uint32_t n);
LAYER("isqrt") uint32_t isqrt(uint32_t x);
LAYER("mathlib_version") uint32_t mathlib_version(void);

static uint32_t number_after(edgefn_str uri, size_t at) {
    uint32_t v = 0;
    for (size_t i = at; i < uri.len && uri.ptr[i] >= '0' && uri.ptr[i] <= '9' && v < 100000000u; i++) v = v * 10 + (uint32_t)(uri.ptr[i] - '0');
    return v;
}

static char *decimal(uint64_t v, char *end) {
    *--end = 0;
    do { *--end = (char)('0' + v % 10); v /= 10; } while (v);
    return end;
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_str uri = ev->request.uri;
    char digits[32], version[12];
    uint64_t answer;
    if (edgefn_str_starts_with(uri, "/fib/")) answer = fib(number_after(uri, 5));
    else if (edgefn_str_starts_with(uri, "/isqrt/")) answer = isqrt(number_after(uri, 7));
    else return edgefn_respond(404, "text/plain", "try /fib/50 or /isqrt/1000000\n");
    edgefn_out res = edgefn_new_response(200, "OK");
    edgefn_set_header(&res, "Content-Type", "text/plain");
    edgefn_set_header(&res, "X-Mathlib-Version", decimal(mathlib_version(), version + sizeof version));
    edgefn_set_body_text(&res, decimal(answer, digits + sizeof digits));
    return edgefn_finish(&res);
}
