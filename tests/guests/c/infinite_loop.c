/* Hostile guest: spins forever in edgefn_main. Expect CpuBudgetExhausted (fuel) or WallClockTimeout. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    volatile uint32_t spins = 0;
    (void)ev;
    for (;;) spins++; /* side effect on every iteration: cannot be optimised away */
}
