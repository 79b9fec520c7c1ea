/* mathlib: a wasm layer, the functions several C or Zig functions share. A function imports them from the
   module "layer:mathlib" (see ../src/numbers.c); its build links this module in (docs/layers.md).
   Publish it: edgefn layer publish mathlib examples/c-layer/mathlib-layer/mathlib.c */
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(name)))

EXPORT("mathlib_version") uint32_t mathlib_version(void) { return 1; }

/* the n-th Fibonacci number (0 past 93, where it no longer fits in 64 bits) */
EXPORT("fib") uint64_t fib(uint32_t n) {
    if (n > 93) return 0;
    uint64_t a = 0, b = 1;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t t = a + b;
        a = b;
        b = t;
    }
    return a;
}

/* the integer square root: the largest r with r * r <= x */
EXPORT("isqrt") uint32_t isqrt(uint32_t x) {
    uint64_t lo = 0, hi = 65536;
    while (lo + 1 < hi) {
        uint64_t mid = (lo + hi) / 2;
        if (mid * mid <= x) lo = mid; else hi = mid;
    }
    return (uint32_t)lo;
}
