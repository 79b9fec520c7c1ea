//! Hostile guest: spins forever. Expect CpuBudgetExhausted (or WallClockTimeout with a huge fuel).
const edgefn = @import("edgefn");

var sink: u64 = 0;

pub fn handle(ev: *const edgefn.Event) !edgefn.Result {
    _ = ev;
    var i: u64 = 0;
    while (true) : (i +%= 1) {
        @as(*volatile u64, &sink).* = i;
    }
}
