/* page: the origin of this example, a small static HTML page (only reached with a valid token). */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    (void)ev;
    return edgefn_respond(200, "text/html; charset=utf-8",
                          "<!doctype html>\n<html><head><title>edgefn</title></head>"
                          "<body><h1>Welcome, authenticated user</h1></body></html>\n");
}
