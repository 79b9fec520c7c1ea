/* page: the origin of this example, a small static HTML page. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    (void)ev;
    return edgefn_respond(200, "text/html; charset=utf-8",
                          "<!doctype html>\n<html><head><title>edgefn</title></head>"
                          "<body><h1>Hello from the origin</h1></body></html>\n");
}
