/* auth: a viewer-request function. A request passes only with `Authorization: Bearer <token>` where
   <token> equals the AUTH_TOKEN environment variable (compared in constant time); it then continues
   to the origin with the Authorization header removed and `X-Auth-User: bearer` added. Anything else
   gets 401 with `WWW-Authenticate: Bearer`. With AUTH_TOKEN unset every request is refused. */
#include "edgefn.h"

static edgefn_result unauthorized(const char *why) {
    edgefn_out res = edgefn_new_response(401, "Unauthorized");
    edgefn_set_header(&res, "WWW-Authenticate", "Bearer realm=\"edgefn\"");
    edgefn_set_header(&res, "Content-Type", "text/plain; charset=utf-8");
    edgefn_set_header(&res, "Cache-Control", "no-store");
    edgefn_set_body_text(&res, why);
    return edgefn_finish(&res);
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_str expected, header;
    if (!edgefn_env("AUTH_TOKEN", &expected) || expected.len == 0) {
        edgefn_log_error("auth: AUTH_TOKEN is not set; refusing every request");
        return unauthorized("unauthorized\n");
    }
    if (!edgefn_header_get(ev->request.headers, "authorization", &header))
        return unauthorized("missing bearer token\n");
    /* "Bearer" is case-insensitive (RFC 7235); the token itself is compared exactly. */
    if (header.len < 7 || !edgefn_str_ieq(edgefn_str_sub(header, 0, 7), "bearer "))
        return unauthorized("missing bearer token\n");
    if (!edgefn_ct_eq(edgefn_str_sub(header, 7, (size_t)-1), expected)) {
        edgefn_log_warn("auth: invalid bearer token");
        return unauthorized("invalid bearer token\n");
    }

    edgefn_out req = edgefn_edit_request(ev);
    edgefn_remove_header(&req, "Authorization"); /* the origin does not need the secret */
    edgefn_set_header(&req, "X-Auth-User", "bearer");
    return edgefn_finish(&req);
}
