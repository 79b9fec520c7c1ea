/* Test guest for asynchronous invocation: fails on early attempts, optionally slowly.
   Querystring `fail=N`: a function error (FlakyError) while the `x-edgefn-attempt` header is <= N;
   `spin=N`: first spins N million iterations (a slow invocation). Otherwise 200 `attempt=<K>`. */
#include "edgefn.h"

/* The decimal value of `key=` in the querystring, or 0 when absent. */
static uint32_t query_number(edgefn_str qs, const char *key) {
    edgefn_str k = edgefn_cstr(key);
    size_t i = 0;
    while (i < qs.len) {
        size_t end = i;
        while (end < qs.len && qs.ptr[end] != '&') end++;
        edgefn_str part = edgefn_str_sub(qs, i, end - i);
        if (part.len > k.len && part.ptr[k.len] == '=' && edgefn_str_eq(edgefn_str_sub(part, 0, k.len), key)) {
            uint32_t v = 0;
            for (size_t j = k.len + 1; j < part.len && part.ptr[j] >= '0' && part.ptr[j] <= '9'; j++) v = v * 10 + (uint32_t)(part.ptr[j] - '0');
            return v;
        }
        i = end + 1;
    }
    return 0;
}

static uint32_t to_number(edgefn_str s) {
    uint32_t v = 0;
    for (size_t j = 0; j < s.len && s.ptr[j] >= '0' && s.ptr[j] <= '9'; j++) v = v * 10 + (uint32_t)(s.ptr[j] - '0');
    return v;
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_str header;
    uint32_t attempt = edgefn_header_get(ev->request.headers, "x-edgefn-attempt", &header) ? to_number(header) : 0;
    volatile uint32_t spins = 0;
    uint32_t spin = query_number(ev->request.querystring, "spin");
    for (uint32_t m = 0; m < spin; m++)
        for (uint32_t n = 0; n < 1000000; n++) spins++; /* volatile: the loop survives -Oz */
    if (attempt <= query_number(ev->request.querystring, "fail"))
        return edgefn_error("FlakyError", "failing on purpose while x-edgefn-attempt <= fail");
    edgefn_buf body = {0};
    edgefn_buf_add_cstr(&body, "attempt=");
    edgefn_buf_add_uint(&body, attempt);
    edgefn_out res = edgefn_new_response(200, "OK");
    edgefn_set_header(&res, "Content-Type", "text/plain");
    edgefn_set_body_text(&res, edgefn_buf_cstr(&body));
    return edgefn_finish(&res);
}
