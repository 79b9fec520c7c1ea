/* secret_user: a function that reads its secret API_KEY through the env API, for tests/test_secrets.py.
     /check  200 if `authorization: Bearer <API_KEY>`, else 401 (nothing about the secret in either)
     /leak   logs the secret by mistake (info and a WASI-less raw log), then answers 200 "logged"
     /fail   fails on purpose with the secret in its error message
   With API_KEY unset every request is refused with 401 and a log line says so. */
#include "edgefn.h"

static edgefn_result plain(uint32_t status, const char *why) {
    edgefn_out res = edgefn_new_response(status, status == 200 ? "OK" : "Unauthorized");
    edgefn_set_header(&res, "Content-Type", "text/plain");
    edgefn_set_body_text(&res, why);
    return edgefn_finish(&res);
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_str key, auth;
    if (!edgefn_env("API_KEY", &key)) {
        edgefn_log_warn("API_KEY is not set");
        return plain(401, "no key configured");
    }
    edgefn_str uri = ev->request.uri;
    if (edgefn_str_eq(uri, "/leak")) {
        edgefn_buf line = {0};
        edgefn_buf_add_cstr(&line, "debugging: the key is ");
        edgefn_buf_add(&line, key);
        edgefn_log_str(EDGEFN_LOG_INFO, edgefn_buf_str(&line));
        return plain(200, "logged");
    }
    if (edgefn_str_eq(uri, "/fail")) {
        edgefn_buf msg = {0};
        edgefn_buf_add_cstr(&msg, "could not use key ");
        edgefn_buf_add(&msg, key);
        return edgefn_error("KeyRejected", edgefn_buf_cstr(&msg));
    }
    edgefn_buf expected = {0};
    edgefn_buf_add_cstr(&expected, "Bearer ");
    edgefn_buf_add(&expected, key);
    if (edgefn_header_get(ev->request.headers, "authorization", &auth) && edgefn_ct_eq(auth, edgefn_buf_str(&expected)))
        return plain(200, "welcome");
    return plain(401, "wrong key");
}
