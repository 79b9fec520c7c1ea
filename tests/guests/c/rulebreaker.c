/* Test guest: breaks (or probes) one Lambda@Edge rule, chosen by the env var MODE, so one source
   serves many manifest functions:
     set-host        request triggers: changes the read-only Host header
     add-connection  adds the disallowed Connection header (request or response triggers)
     change-status   response triggers: changes the status to 299
     big-response    generates a 200 response with a 50,000-byte body (over viewer triggers' 40 KB)
     body-info       request triggers: continues, adding x-body-len and x-body-truncated
     response-body-info  response triggers: adds x-body-len and x-body-truncated of the response body
     tag             continues/edits, adding header x-tag-<TAG> = 1 (TAG from env), to trace which hooks ran
     continue        changes nothing (edgefn_continue) on any trigger */
#include "edgefn.h"

static edgefn_out edit(const edgefn_event *ev) {
    return ev->has_response ? edgefn_edit_response(ev) : edgefn_edit_request(ev);
}

static void add_body_info(edgefn_out *o, bool present, bool truncated, size_t len) {
    edgefn_buf n = {0};
    edgefn_buf_add_uint(&n, present ? len : 0);
    edgefn_set_header_str(o, "x-body-len", edgefn_buf_str(&n));
    edgefn_set_header(o, "x-body-truncated", truncated ? "1" : "0");
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_str mode;
    if (!edgefn_env("MODE", &mode)) return edgefn_error("ConfigurationError", "set env MODE");
    if (edgefn_str_eq(mode, "set-host")) {
        edgefn_out o = edgefn_edit_request(ev);
        edgefn_set_header(&o, "Host", "evil.example");
        return edgefn_finish(&o);
    }
    if (edgefn_str_eq(mode, "add-connection")) {
        edgefn_out o = edit(ev);
        edgefn_set_header(&o, "Connection", "close");
        return edgefn_finish(&o);
    }
    if (edgefn_str_eq(mode, "change-status")) {
        edgefn_out o = edgefn_edit_response(ev);
        edgefn_set_status(&o, 299, "Changed");
        return edgefn_finish(&o);
    }
    if (edgefn_str_eq(mode, "big-response")) {
        static char big[50000];
        for (size_t i = 0; i < sizeof big; i++) big[i] = 'a' + (char)(i % 26);
        edgefn_out o = edgefn_new_response(200, "OK");
        edgefn_set_header(&o, "Content-Type", "text/plain");
        edgefn_set_body(&o, big, sizeof big);
        return edgefn_finish(&o);
    }
    if (edgefn_str_eq(mode, "body-info")) {
        edgefn_out o = edgefn_edit_request(ev);
        add_body_info(&o, ev->request.body.present, ev->request.body.truncated, ev->request.body.data.len);
        return edgefn_finish(&o);
    }
    if (edgefn_str_eq(mode, "response-body-info")) {
        edgefn_out o = edgefn_edit_response(ev);
        add_body_info(&o, ev->response.body.present, ev->response.body.truncated, ev->response.body.data.len);
        return edgefn_finish(&o);
    }
    if (edgefn_str_eq(mode, "tag")) {
        edgefn_str tag;
        edgefn_buf name = {0};
        edgefn_buf_add_cstr(&name, "x-tag-");
        edgefn_buf_add(&name, edgefn_env("TAG", &tag) ? tag : EDGEFN_STR("none"));
        edgefn_out o = edit(ev);
        edgefn_set_header(&o, edgefn_buf_cstr(&name), "1");
        return edgefn_finish(&o);
    }
    if (edgefn_str_eq(mode, "continue")) return edgefn_continue(ev);
    return edgefn_error("ConfigurationError", "unknown MODE");
}
