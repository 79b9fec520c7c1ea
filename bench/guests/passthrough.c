/* passthrough: a hook that changes nothing. Request triggers continue with the request unchanged ({}),
   response triggers return the incoming response unchanged (only the status crosses back). The bench uses
   it on all four hooks to measure what each pipeline stage costs by itself. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    return edgefn_continue(ev);
}
