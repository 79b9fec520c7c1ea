/* hello: the smallest useful edgefn function. It acts as the origin and answers every request with
   200 text/plain "<GREETING> from edgefn!" (GREETING from the manifest env, "Hello" when unset). */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    (void)ev;
    edgefn_str greeting;
    edgefn_buf body = {0};
    edgefn_buf_add(&body, edgefn_env("GREETING", &greeting) ? greeting : EDGEFN_STR("Hello"));
    edgefn_buf_add_cstr(&body, " from edgefn!");

    edgefn_out res = edgefn_new_response(200, "OK");
    edgefn_set_header(&res, "Content-Type", "text/plain; charset=utf-8");
    edgefn_set_body_str(&res, edgefn_buf_str(&body));
    return edgefn_finish(&res);
}
