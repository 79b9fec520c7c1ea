/* kv-redirects: a viewer-request function that serves redirects from a map kept in the key-value store.
   The key is the request's path; its value is where to send the viewer (a path or a URL), answered with a
   301 at the edge. A path with no entry continues to the origin unchanged. Edit the map without a deploy:
       edgefn kv put redirects /old-pricing /pricing                                          */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_kv_result found;
    if (!edgefn_kv_get("redirects", ev->request.uri, &found)) {
        if (!found.ok) /* refused or failed: say why, and let the request through rather than fail it */
            edgefn_log_str(EDGEFN_LOG_WARN, found.error);
        return edgefn_continue(ev);
    }
    edgefn_str target = { (const char *)found.value.ptr, found.value.len };
    edgefn_out res = edgefn_new_response(301, "Moved Permanently");
    edgefn_set_header_str(&res, "Location", target);
    edgefn_set_header(&res, "Cache-Control", "max-age=60");
    return edgefn_finish(&res);
}
