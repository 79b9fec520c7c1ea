//! The SDK round trip: every part of the event it reads, answered as text; request hooks add a header,
//! response hooks add a header, an origin-request for /in is rewritten, /fail returns an error, /kv and /fetch
//! use the host.
const std = @import("std");
const edgefn = @import("edgefn");

pub fn handle(ev: *const edgefn.Event) !edgefn.Result {
    switch (ev.event_type) {
        .viewer_response, .origin_response => {
            var res = try edgefn.Response.edit(ev);
            try res.setHeader("x-zig", "seen");
            return res.finish();
        },
        .origin_request => if (std.mem.eql(u8, ev.request.uri, "/in")) {
            var req = try edgefn.Request.edit(ev);
            req.setUri("/from-zig");
            try req.setHeader("x-zig", "rewrote");
            return req.finish();
        },
        else => {},
    }
    const uri = ev.request.uri;
    if (std.mem.eql(u8, uri, "/fail")) return error.AskedToFail;
    if (std.mem.eql(u8, uri, "/pass")) return edgefn.pass(ev);
    if (std.mem.eql(u8, uri, "/kv")) {
        const ns = edgefn.kv("data");
        const old = try ns.get("count");
        const count = if (old) |text| (std.fmt.parseInt(u32, text, 10) catch 0) + 1 else 1;
        try ns.put("count", try edgefn.fmt("{d}", .{count}), null);
        const page = try ns.list("c", null);
        return edgefn.respond(200, "text/plain", try edgefn.fmt("count={d} keys={d} deleted={}", .{ count, page.keys.len, try ns.delete("nothing") }));
    }
    if (std.mem.eql(u8, uri, "/kv-other")) {
        _ = edgefn.kv("private").get("x") catch |e| {
            return edgefn.respond(500, "text/plain", try edgefn.fmt("{s}: {s}", .{ @errorName(e), edgefn.last_error }));
        };
        return edgefn.respond(200, "text/plain", "not refused");
    }
    if (std.mem.eql(u8, uri, "/fetch")) {
        const target = (try edgefn.env("TARGET")) orelse "http://127.0.0.1:9/";
        const answer = edgefn.fetch(.{ .method = "POST", .url = target, .headers = &.{.{ "x-probe", "zig" }}, .body = "ping" }) catch |e| {
            return edgefn.respond(502, "text/plain", try edgefn.fmt("{s}: {s}", .{ @errorName(e), edgefn.last_error }));
        };
        return edgefn.respond(200, "text/plain", try edgefn.fmt("{d} {s}", .{ answer.status, answer.body }));
    }
    edgefn.logf(.info, "echo.zig saw {s}", .{uri});
    var res = edgefn.Response.init(200);
    try res.setHeader("Content-Type", "text/plain");
    try res.addHeader("X-Many", "1");
    try res.addHeader("X-Many", "2");
    const body = try edgefn.fmt("method={s} uri={s} qs={s} ua={s} ip={s} id={s} body={s} greeting={s}", .{
        ev.request.method,                      uri,                          ev.request.querystring,
        ev.request.header("User-Agent") orelse "-", ev.request.client_ip, ev.request_id,
        ev.request.body orelse "-",             (try edgefn.env("GREETING")) orelse "-",
    });
    try res.setBody(body);
    return res.finish();
}
