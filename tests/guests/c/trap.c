/* Hostile guest: traps. uri "/div0" divides by zero (trap "integer divide by zero"); any other uri
   executes `unreachable` (__builtin_trap). Expect GuestTrap. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    if (edgefn_str_eq(ev->request.uri, "/div0")) {
        /* both operands volatile, so the division cannot be folded or rewritten: i32.div_u traps */
        volatile uint32_t one = 1, zero = 0, q;
        q = one / zero;
        (void)q;
    }
    __builtin_trap();
}
