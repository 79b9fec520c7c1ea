/* Test guest (target = "wasi"): uses its instance's /tmp, as Lambda functions use theirs.
   The query string says what to do; the body answers "key=value" lines.
     op=write&kb=N   write N KiB to /tmp/data in 4 KiB chunks: written=BYTES errno=E
     op=size         the size of /tmp/data: size=BYTES (-1: none, e.g. on a fresh instance)
     op=escape       try the ways out of /tmp: each one refused or opened
     op=fill-then-fail   write 64 MiB (past any small cap), then fail with a trap */
#include "edgefn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char chunk[4096];
static char out[1024];

static int query_int(edgefn_str qs, const char *key) {
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen < qs.len; i++) {
        if ((i == 0 || qs.ptr[i - 1] == '&') && memcmp(qs.ptr + i, key, klen) == 0 && qs.ptr[i + klen] == '=') {
            int v = 0;
            for (size_t j = i + klen + 1; j < qs.len && qs.ptr[j] >= '0' && qs.ptr[j] <= '9'; j++) v = v * 10 + (qs.ptr[j] - '0');
            return v;
        }
    }
    return 0;
}

static long write_kb(int kb, int *err) {
    FILE *f = fopen("/tmp/data", "a");
    long written = 0;
    *err = 0;
    if (!f) { *err = errno; return 0; }
    setvbuf(f, NULL, _IONBF, 0);  /* each fwrite is one fd_write: the error shows at the write that hit the cap */
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < kb / 4; i++) {
        size_t n = fwrite(chunk, 1, sizeof chunk, f);
        written += (long)n;
        if (n < sizeof chunk) { *err = errno; break; }
    }
    fclose(f);
    return written;
}

static const char *tried(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return "refused";
    close(fd);
    return "opened";
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_str qs = ev->request.querystring;
    edgefn_out res = edgefn_new_response(200, "OK");
    if (edgefn_str_starts_with(qs, "op=write")) {
        int err;
        long written = write_kb(query_int(qs, "kb"), &err);
        snprintf(out, sizeof out, "written=%ld\nerrno=%d\nenospc=%d\n", written, err, err == ENOSPC);
    } else if (edgefn_str_starts_with(qs, "op=size")) {
        struct stat st;
        snprintf(out, sizeof out, "size=%lld\n", stat("/tmp/data", &st) == 0 ? (long long)st.st_size : -1LL);
    } else if (edgefn_str_starts_with(qs, "op=escape")) {
        symlink("/etc/passwd", "/tmp/abs-link");
        symlink("../../../../../../etc/passwd", "/tmp/rel-link");
        symlink("..", "/tmp/up");
        snprintf(out, sizeof out, "dotdot=%s\nabsolute=%s\nabs-link=%s\nrel-link=%s\nup-dir=%s\nmkdir-up=%s\n",
                 tried("/tmp/../etc/passwd"), tried("/etc/passwd"), tried("/tmp/abs-link"), tried("/tmp/rel-link"),
                 tried("/tmp/up/etc/passwd"), mkdir("/tmp/../escaped", 0700) == 0 ? "made" : "refused");
    } else if (edgefn_str_starts_with(qs, "op=fill-then-fail")) {
        int err;
        write_kb(64 * 1024, &err);
        __builtin_trap();
    } else {
        snprintf(out, sizeof out, "unknown op\n");
    }
    edgefn_set_header(&res, "Content-Type", "text/plain");
    edgefn_set_body_text(&res, out);
    return edgefn_finish(&res);
}
