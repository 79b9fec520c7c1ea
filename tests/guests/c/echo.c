/* Test guest: a 200 response whose body is the request body (bytes, exactly; absent body: empty)
   and which copies every request header value into a response header `x-echo-<name>` (repeats kept,
   in order, with the header's name as sent: `X-Echo-User-Agent`). */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_out res = edgefn_new_response(200, "OK");
    edgefn_header_iter it = edgefn_headers_iter(ev->request.headers, NULL);
    edgefn_header h;
    while (edgefn_headers_next(&it, &h)) {
        edgefn_buf name = {0};
        edgefn_buf_add_cstr(&name, "X-Echo-");
        edgefn_buf_add(&name, h.key);
        edgefn_add_header_str(&res, edgefn_buf_cstr(&name), h.value);
    }
    edgefn_set_header(&res, "Content-Type", "application/octet-stream");
    edgefn_set_body(&res, ev->request.body.data.ptr, ev->request.body.data.len);
    return edgefn_finish(&res);
}
