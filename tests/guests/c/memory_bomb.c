/* Hostile guest: takes memory until the host refuses, touching every page, then keeps asking and
   traps. It never returns a result. Expect MemoryLimitExceeded. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    (void)ev;
    for (;;) { /* through the SDK arena, 1 MiB at a time */
        volatile uint8_t *p = (volatile uint8_t *)edgefn_arena_alloc(1u << 20);
        if (!p) break;
        for (uint32_t i = 0; i < (1u << 20); i += 4096) p[i] = 1;
    }
    for (int tries = 0; tries < 1000; tries++) /* then raw memory.grow, one page at a time */
        if (__builtin_wasm_memory_grow(0, 1) != (size_t)-1) tries = 0;
    __builtin_trap(); /* memory.grow kept failing: never return a valid result */
}
