/* Test guest: reads env vars GREETING and MISSING. Headers: `x-greeting: <value>` and
   `x-missing: <value>`, each only when the variable is set; `x-greeting-length: <bytes>`.
   Body (text): "GREETING=<value or (unset)>\nMISSING=<value or (unset)>\n". */
#include "edgefn.h"

static void report(edgefn_out *res, edgefn_buf *body, const char *key, const char *header) {
    edgefn_str value;
    edgefn_buf_add_cstr(body, key);
    edgefn_buf_add_char(body, '=');
    if (edgefn_env(key, &value)) {
        edgefn_set_header_str(res, header, value);
        edgefn_buf_add(body, value);
    } else {
        edgefn_buf_add_cstr(body, "(unset)");
    }
    edgefn_buf_add_char(body, '\n');
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_out res = edgefn_new_response(200, "OK");
    edgefn_buf body = {0}, len = {0};
    edgefn_str g;
    (void)ev;
    report(&res, &body, "GREETING", "X-Greeting");
    report(&res, &body, "MISSING", "X-Missing");
    edgefn_buf_add_uint(&len, edgefn_env("GREETING", &g) ? g.len : 0);
    edgefn_set_header_str(&res, "X-Greeting-Length", edgefn_buf_str(&len));
    edgefn_set_header(&res, "Content-Type", "text/plain; charset=utf-8");
    edgefn_set_body_str(&res, edgefn_buf_str(&body));
    return edgefn_finish(&res);
}
