/* redirect: a viewer-request function. Requests for /old/<rest> get a 301 to /new/<rest> (the
   querystring is kept); every other request continues to the origin unchanged. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    const edgefn_request *req = &ev->request;
    if (!edgefn_str_starts_with(req->uri, "/old/"))
        return edgefn_continue(ev);

    edgefn_buf location = {0};
    edgefn_buf_add_cstr(&location, "/new/");
    edgefn_buf_add(&location, edgefn_str_sub(req->uri, 5, (size_t)-1)); /* after "/old/" */
    if (req->querystring.len) {
        edgefn_buf_add_char(&location, '?');
        edgefn_buf_add(&location, req->querystring);
    }

    edgefn_out res = edgefn_new_response(301, "Moved Permanently");
    edgefn_set_header_str(&res, "Location", edgefn_buf_str(&location));
    edgefn_set_header(&res, "Cache-Control", "max-age=3600");
    return edgefn_finish(&res);
}
