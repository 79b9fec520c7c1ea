/* Hostile guest: unbounded recursion that cannot become a loop (a volatile frame buffer is used after
   each call returns, so there is no tail call). Expect GuestTrap (stack overflow, or an
   out-of-bounds access once the shadow stack pointer passes address 0). */
#include "edgefn.h"

__attribute__((noinline)) static uint32_t dive(uint32_t depth) {
    volatile uint8_t frame[64];
    if (depth == UINT32_MAX) return 0; /* never reached: the stack runs out long before */
    frame[depth & 63u] = (uint8_t)depth;
    uint32_t below = dive(depth + 1u);
    frame[below & 63u] = (uint8_t)below;
    return below + frame[(depth * 7u) & 63u];
}

edgefn_result edgefn_main(const edgefn_event *ev) {
    uint32_t r = dive(ev->request.uri.len);
    return edgefn_respond(200, "text/plain", r ? "unreachable" : "unreachable!");
}
