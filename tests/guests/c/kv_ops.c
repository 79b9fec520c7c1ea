/* kv_ops: every key-value call driven by the path, for tests/test_kv.py. Answers 200 with what the host said
   ("error: <the host's reason>" when refused), 404 for a key with no value.
     /get/<key>  /put/<key>?<value>  /putttl/<key>?<value> (ttl 1 s)  /del/<key>  /list/<prefix> (pages of 2)
     /other-ns (a namespace not granted)  /burn (20 gets: past kv_ops)  /bigkey (a 513-byte key)  /noop (no call) */
#include "edgefn.h"

static edgefn_result text(uint32_t status, edgefn_str body) {
    edgefn_out res = edgefn_new_response(status, status == 200 ? "OK" : "Not Found");
    edgefn_set_header(&res, "Content-Type", "text/plain");
    edgefn_set_body(&res, body.ptr, body.len);
    return edgefn_finish(&res);
}

static edgefn_result failed(const edgefn_kv_result *r) {
    edgefn_buf b = {0};
    edgefn_buf_add_cstr(&b, "error: ");
    edgefn_buf_add(&b, r->error);
    return text(200, edgefn_buf_str(&b));
}

static bool take(edgefn_str uri, const char *prefix, edgefn_str *rest) {
    if (!edgefn_str_starts_with(uri, prefix)) return false;
    *rest = edgefn_str_sub(uri, edgefn_cstr(prefix).len, (size_t)-1);
    return true;
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_str uri = ev->request.uri, key;
    edgefn_kv_result r;
    if (take(uri, "/get/", &key)) {
        if (edgefn_kv_get("data", key, &r)) return text(200, (edgefn_str){ (const char *)r.value.ptr, r.value.len });
        return r.ok ? text(404, EDGEFN_STR("no value")) : failed(&r);
    }
    if (take(uri, "/put/", &key) || take(uri, "/putttl/", &key)) {
        uint32_t ttl = edgefn_str_starts_with(uri, "/putttl/") ? 1 : 0;
        if (!edgefn_kv_put("data", key, ev->request.querystring.ptr, ev->request.querystring.len, ttl, &r)) return failed(&r);
        return text(200, EDGEFN_STR("stored"));
    }
    if (take(uri, "/del/", &key)) {
        if (!edgefn_kv_delete("data", key, &r)) return failed(&r);
        return text(200, r.found ? EDGEFN_STR("deleted") : EDGEFN_STR("absent"));
    }
    if (take(uri, "/list/", &key)) {
        edgefn_buf b = {0};
        edgefn_str cursor = EDGEFN_STR("");
        for (int page = 0; page < 50; page++) {
            if (!edgefn_kv_list("data", key, cursor, 2, &r)) return failed(&r);
            edgefn_str k;
            while (edgefn_kv_next_key(&r, &k)) {
                edgefn_buf_add(&b, k);
                edgefn_buf_add_char(&b, '\n');
            }
            if (r.cursor.len == 0) break;
            cursor = r.cursor;
        }
        return text(200, edgefn_buf_str(&b));
    }
    if (edgefn_str_eq(uri, "/other-ns")) {
        edgefn_kv_result o;
        edgefn_kv_get("private", EDGEFN_STR("k"), &o);
        return o.ok ? text(200, EDGEFN_STR("allowed?!")) : failed(&o);
    }
    if (edgefn_str_eq(uri, "/burn")) {
        for (int i = 0; i < 20; i++) {
            edgefn_kv_get("data", EDGEFN_STR("k"), &r);
            if (!r.ok) return failed(&r);
        }
        return text(200, EDGEFN_STR("20 gets"));
    }
    if (edgefn_str_eq(uri, "/bigkey")) {
        static char big[513];
        for (int i = 0; i < 513; i++) big[i] = 'k';
        edgefn_kv_get("data", (edgefn_str){ big, sizeof big }, &r);
        return r.ok ? text(200, EDGEFN_STR("accepted?!")) : failed(&r);
    }
    return text(200, EDGEFN_STR("no call"));
}
