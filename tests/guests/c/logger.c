/* Test guest: logs one line per level, then returns 200 "logged".
     debug "logger: debug line"   info "logger: info line"   warn "logger: warn line"
     error "logger: error line"   level 7 (host logs it as info) "logger: level 7 line"
   Querystring "flood=N": N more info lines "logger: flood <i>" (for the 64 KiB cap);
   querystring "long=N": one info line of N 'x' (for the 4 KiB line cut). */
#include "edgefn.h"

static uint32_t param(edgefn_str qs, const char *name) {
    edgefn_str n = edgefn_cstr(name);
    uint32_t v = 0;
    if (!edgefn_str_starts_with(qs, name) || qs.len <= n.len || qs.ptr[n.len] != '=') return 0;
    for (size_t i = n.len + 1; i < qs.len && qs.ptr[i] >= '0' && qs.ptr[i] <= '9' && v < 10000000u; i++)
        v = v * 10u + (uint32_t)(qs.ptr[i] - '0');
    return v;
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_log_debug("logger: debug line");
    edgefn_log_info("logger: info line");
    edgefn_log_warn("logger: warn line");
    edgefn_log_error("logger: error line");
    edgefn_log((edgefn_log_level)7, "logger: level 7 line");

    uint32_t flood = param(ev->request.querystring, "flood");
    for (uint32_t i = 0; i < flood; i++) {
        edgefn_buf line = {0};
        edgefn_buf_add_cstr(&line, "logger: flood ");
        edgefn_buf_add_uint(&line, i);
        edgefn_log_str(EDGEFN_LOG_INFO, edgefn_buf_str(&line));
    }
    uint32_t n = param(ev->request.querystring, "long");
    if (n) {
        char *x = (char *)edgefn_arena_alloc(n);
        if (x) {
            __builtin_memset(x, 'x', n);
            edgefn_str s = { x, n };
            edgefn_log_str(EDGEFN_LOG_INFO, s);
        }
    }
    return edgefn_respond(200, "text/plain; charset=utf-8", "logged");
}
