/* passthrough: changes nothing, on any trigger (edgefn_continue). */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    return edgefn_continue(ev);
}
