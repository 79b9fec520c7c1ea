/* Test guest: outbound fetch. The querystring is `url=<url>`: everything after `url=` is the target
   (percent-decoded first when it holds no "://", so both `url=http://h/p?a=1&b=2` and
   `url=http%3A%2F%2Fh%2Fp` work). It GETs the target and answers 200 with
     x-fetch-status: <upstream status>    (only when the fetch got a response)
     x-fetch-error:  <error text>         (only when it did not: refused host, timeout, ...)
     content-type:   <upstream content-type, when it sent one>
   and body = the upstream body (empty on error). No `url=` in the querystring: 400 with
   x-fetch-error. Control characters in copied header values become spaces. */
#include "edgefn.h"

static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool has_scheme_sep(edgefn_str s) {
    for (size_t i = 0; i + 3 <= s.len; i++)
        if (s.ptr[i] == ':' && s.ptr[i + 1] == '/' && s.ptr[i + 2] == '/') return true;
    return false;
}

static edgefn_str percent_decode(edgefn_str s) {
    edgefn_buf b = {0};
    for (size_t i = 0; i < s.len; i++) {
        int hi, lo;
        if (s.ptr[i] == '%' && i + 2 < s.len && (hi = hex(s.ptr[i + 1])) >= 0 && (lo = hex(s.ptr[i + 2])) >= 0) {
            edgefn_buf_add_char(&b, (char)(hi * 16 + lo));
            i += 2;
        } else {
            edgefn_buf_add_char(&b, s.ptr[i] == '+' ? ' ' : s.ptr[i]);
        }
    }
    return edgefn_buf_str(&b);
}

/* A header-safe copy: CR, LF, NUL and other control characters become spaces. */
static edgefn_str header_safe(edgefn_str s) {
    edgefn_buf b = {0};
    for (size_t i = 0; i < s.len; i++)
        edgefn_buf_add_char(&b, ((unsigned char)s.ptr[i] < 0x20 || s.ptr[i] == 0x7f) ? ' ' : s.ptr[i]);
    return edgefn_buf_str(&b);
}

/* The value after `url=` at the start of the querystring or after an `&`, to the end. */
static bool target_url(edgefn_str qs, edgefn_str *url) {
    for (size_t i = 0; i + 4 <= qs.len; i++) {
        if ((i == 0 || qs.ptr[i - 1] == '&') && edgefn_str_starts_with(edgefn_str_sub(qs, i, 4), "url=")) {
            *url = edgefn_str_sub(qs, i + 4, (size_t)-1);
            if (!has_scheme_sep(*url)) *url = percent_decode(*url);
            return true;
        }
    }
    return false;
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_str url, content_type;
    edgefn_buf status = {0};
    edgefn_fetch_response up;

    if (!target_url(ev->request.querystring, &url)) {
        edgefn_out res = edgefn_new_response(400, NULL);
        edgefn_set_header(&res, "X-Fetch-Error", "no url= in the querystring");
        return edgefn_finish(&res);
    }
    edgefn_fetch_request req = edgefn_fetch_new_str("GET", url);
    edgefn_fetch_header(&req, "User-Agent", "edgefn-fetcher-test");
    edgefn_out res = edgefn_new_response(200, "OK");
    if (edgefn_fetch_send(&req, &up)) {
        edgefn_buf_add_uint(&status, up.status);
        edgefn_set_header_str(&res, "X-Fetch-Status", edgefn_buf_str(&status));
        if (edgefn_header_get(up.headers, "content-type", &content_type))
            edgefn_set_header_str(&res, "Content-Type", header_safe(content_type));
        edgefn_set_body(&res, up.body.ptr, up.body.len);
    } else {
        edgefn_set_header_str(&res, "X-Fetch-Error", header_safe(up.error));
    }
    return edgefn_finish(&res);
}
