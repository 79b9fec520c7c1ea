/* Test guest: a global counter incremented on every request and returned as `x-count`. On fresh
   instances the answer is always 1; a reused instance would count up. */
#include "edgefn.h"

static uint32_t counter;

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_buf count = {0};
    (void)ev;
    counter++;
    edgefn_buf_add_uint(&count, counter);
    edgefn_out res = edgefn_new_response(200, "OK");
    edgefn_set_header_str(&res, "X-Count", edgefn_buf_str(&count));
    edgefn_set_header(&res, "Content-Type", "text/plain");
    edgefn_set_body_str(&res, edgefn_buf_str(&count));
    return edgefn_finish(&res);
}
