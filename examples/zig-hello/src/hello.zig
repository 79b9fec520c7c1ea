//! A Zig function acting as the origin for /zig/*: a plain-text greeting naming the path, with the
//! greeting from the manifest env and the viewer's user agent, through the Zig SDK (guest-sdk/zig).
const std = @import("std");
const edgefn = @import("edgefn");

pub fn handle(ev: *const edgefn.Event) !edgefn.Result {
    const greeting = (try edgefn.env("GREETING")) orelse "Hello";
    const agent = ev.request.header("user-agent") orelse "an unnamed client";
    if (std.mem.eql(u8, ev.request.uri, "/zig/fail")) return error.AskedToFail;
    var res = edgefn.Response.init(200);
    try res.setHeader("Content-Type", "text/plain; charset=utf-8");
    try res.setHeader("Cache-Control", "max-age=10");
    try res.setBody(try edgefn.fmt("{s} from Zig, {s}: you asked for {s}\n", .{ greeting, agent, ev.request.uri }));
    return res.finish();
}
