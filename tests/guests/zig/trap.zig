//! Hostile guest: traps. "/div0" divides by zero (an integer division trap); any other uri reaches
//! `unreachable` (@trap). Expect GuestTrap.
const std = @import("std");
const edgefn = @import("edgefn");

var zero: u32 = 0;
var one: u32 = 1;

pub fn handle(ev: *const edgefn.Event) !edgefn.Result {
    if (std.mem.eql(u8, ev.request.uri, "/div0")) {
        const q = @as(*volatile u32, &one).* / @as(*volatile u32, &zero).*;
        if (q == 7) return edgefn.pass(ev);
    }
    @trap();
}
