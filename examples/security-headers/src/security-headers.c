/* security-headers: a response-trigger function (viewer-response or origin-response) that adds the
   usual security headers to every response. Every other header of the response is kept as it came;
   a header of the same name set by the origin is replaced. Status and body are left untouched. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    if (!ev->has_response)
        return edgefn_error("ConfigurationError",
                            "security-headers must run on a response trigger (viewer_response or origin_response)");

    edgefn_out res = edgefn_edit_response(ev);
    edgefn_set_header(&res, "Strict-Transport-Security", "max-age=63072000; includeSubDomains; preload");
    edgefn_set_header(&res, "X-Content-Type-Options", "nosniff");
    edgefn_set_header(&res, "X-Frame-Options", "DENY");
    edgefn_set_header(&res, "Referrer-Policy", "strict-origin-when-cross-origin");
    edgefn_set_header(&res, "Content-Security-Policy",
                      "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'");
    return edgefn_finish(&res);
}
