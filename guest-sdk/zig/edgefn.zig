//! edgefn's Zig guest SDK, guest ABI v1 (guest-sdk/ABI.md): `const edgefn = @import("edgefn");`
//!
//! A function's root file declares one handler; this module exports the ABI (`edgefn_abi_v1`, `edgefn_alloc`,
//! `edgefn_handle`), decodes the CBOR event before the handler runs, and encodes its result:
//!
//!     const edgefn = @import("edgefn");
//!
//!     pub fn handle(ev: *const edgefn.Event) !edgefn.Result {
//!         if (ev.request.header("user-agent")) |ua| edgefn.log(.info, ua);
//!         var res = edgefn.Response.init(200);
//!         try res.setHeader("content-type", "text/plain");
//!         try res.setBody(try edgefn.fmt("Hello from Zig, {s}\n", .{ev.request.uri}));
//!         return res.finish();
//!     }
//!
//! Memory: everything lives in an arena reset at the start of every invocation (edgefn_alloc), so nothing is
//! freed by hand and a reused instance recycles its buffers. A handler's error becomes a function error
//! ({"errorType": "<the error's name>"}); error.OutOfMemory becomes "OutOfMemory", as in the C SDK.
//! `edgefn build` compiles the root file with this module as `edgefn` (wasm32-freestanding, ReleaseSmall).

const std = @import("std");
const root = @import("root");

// --- host imports (edgefn:host/v1): none of them ever traps -------------------------------------------------

const host = struct {
    extern "edgefn:host/v1" fn log(level: i32, ptr: [*]const u8, len: usize) void;
    extern "edgefn:host/v1" fn env_get(key: [*]const u8, key_len: usize, buf: [*]u8, buf_cap: usize) i32;
    extern "edgefn:host/v1" fn fetch(req: [*]const u8, req_len: usize) i32;
    extern "edgefn:host/v1" fn fetch_result(buf: [*]u8, buf_cap: usize) i32;
    extern "edgefn:host/v1" fn kv(req: [*]const u8, req_len: usize) i32;
    extern "edgefn:host/v1" fn kv_result(buf: [*]u8, buf_cap: usize) i32;
};

// --- the arena -----------------------------------------------------------------------------------------------

var arena_state = std.heap.ArenaAllocator.init(std.heap.wasm_allocator);

/// The invocation's allocator: freed all at once when the next invocation starts.
pub fn allocator() std.mem.Allocator {
    return arena_state.allocator();
}

/// `std.fmt.allocPrint` into the invocation's arena.
pub fn fmt(comptime format: []const u8, args: anytype) ![]u8 {
    return std.fmt.allocPrint(allocator(), format, args);
}

// --- the event (ABI §4) --------------------------------------------------------------------------------------

pub const EventType = enum { viewer_request, origin_request, origin_response, viewer_response, unknown };

pub const Header = struct {
    /// lowercase
    name: []const u8,
    /// as the client sent it
    key: []const u8,
    value: []const u8,
};

pub const Headers = struct {
    list: []const Header = &.{},

    /// The first value of header `name` (any case), or null.
    pub fn get(self: Headers, name: []const u8) ?[]const u8 {
        for (self.list) |h| if (std.ascii.eqlIgnoreCase(h.name, name)) return h.value;
        return null;
    }
};

pub const Request = struct {
    client_ip: []const u8 = "",
    method: []const u8 = "GET",
    uri: []const u8 = "/",
    querystring: []const u8 = "",
    headers: Headers = .{},
    body: ?[]const u8 = null,

    pub fn header(self: *const Request, name: []const u8) ?[]const u8 {
        return self.headers.get(name);
    }

    /// A builder of the request this hook continues with, starting from the event's.
    pub fn edit(ev: *const Event) !Out {
        var out = try Out.fromHeaders(.request, ev.request.headers);
        out.method = ev.request.method;
        out.uri = ev.request.uri;
        out.querystring = ev.request.querystring;
        return out;
    }
};

pub const Response = struct {
    status: u16 = 200,
    status_description: []const u8 = "",
    headers: Headers = .{},
    body: ?[]const u8 = null,

    pub fn header(self: *const Response, name: []const u8) ?[]const u8 {
        return self.headers.get(name);
    }

    /// A new response (a request trigger answering at the edge, or a response trigger replacing it).
    pub fn init(status: u16) Out {
        var out = Out{ .kind = .response, .headers = .empty, .headers_changed = true };
        out.status = status;
        return out;
    }

    /// A builder starting from the event's response: only what is changed crosses back.
    pub fn edit(ev: *const Event) !Out {
        const incoming = ev.response orelse return error.NoResponseInThisEvent;
        var out = try Out.fromHeaders(.response, incoming.headers);
        out.status = incoming.status;
        out.edited = true;
        return out;
    }
};

pub const Event = struct {
    event_type: EventType = .unknown,
    request_id: []const u8 = "",
    function_name: []const u8 = "",
    distribution_domain_name: []const u8 = "",
    request: Request = .{},
    response: ?Response = null,
};

// --- results (ABI §5) ----------------------------------------------------------------------------------------

/// The packed location of the result document: what edgefn_handle returns.
pub const Result = u64;

/// A request or response under construction; `finish` encodes it.
pub const Out = struct {
    kind: enum { request, response },
    method: []const u8 = "",
    uri: []const u8 = "",
    querystring: []const u8 = "",
    status: u16 = 200,
    status_description: ?[]const u8 = null,
    headers: std.ArrayList(Header),
    headers_changed: bool = false,
    body: ?[]const u8 = null,
    /// a response built from the event's (only changes cross back)
    edited: bool = false,

    fn fromHeaders(kind: @FieldType(Out, "kind"), headers: Headers) !Out {
        var list: std.ArrayList(Header) = .empty;
        try list.appendSlice(allocator(), headers.list);
        return .{ .kind = kind, .headers = list };
    }

    fn checkName(name: []const u8) !void {
        if (name.len == 0) return error.InvalidHeaderName;
        for (name) |c| if (c <= ' ' or c >= 127 or c == ':') return error.InvalidHeaderName;
    }

    /// Replace every value of header `name` with `value`.
    pub fn setHeader(self: *Out, name: []const u8, value: []const u8) !void {
        self.removeHeader(name);
        try self.addHeader(name, value);
    }

    /// Add one more value of header `name`.
    pub fn addHeader(self: *Out, name: []const u8, value: []const u8) !void {
        try checkName(name);
        if (std.mem.indexOfAny(u8, value, "\r\n") != null) return error.InvalidHeaderValue;
        try self.headers.append(allocator(), .{ .name = try std.ascii.allocLowerString(allocator(), name), .key = name, .value = value });
        self.headers_changed = true;
    }

    pub fn removeHeader(self: *Out, name: []const u8) void {
        var i: usize = 0;
        while (i < self.headers.items.len) {
            if (std.ascii.eqlIgnoreCase(self.headers.items[i].name, name)) {
                _ = self.headers.orderedRemove(i);
                self.headers_changed = true;
            } else i += 1;
        }
    }

    pub fn setBody(self: *Out, body: []const u8) !void {
        self.body = body;
    }

    pub fn setStatus(self: *Out, status: u16, description: ?[]const u8) void {
        self.status = status;
        self.status_description = description;
    }

    pub fn setUri(self: *Out, uri: []const u8) void {
        self.uri = uri;
    }

    pub fn setQuerystring(self: *Out, querystring: []const u8) void {
        self.querystring = querystring;
    }

    /// Encode the result document.
    pub fn finish(self: *const Out) !Result {
        var w = Writer{};
        if (self.kind == .response) {
            if (self.status < 100 or self.status > 599) return error.StatusOutOfRange;
            const full = !self.edited;
            var n: usize = 1;
            if (full or self.status_description != null) n += 1;
            if (full or self.headers_changed) n += 1;
            if (self.body != null) n += 1;
            try w.head(5, n);
            try w.text("status");
            try w.head(0, self.status);
            if (full or self.status_description != null) {
                try w.text("statusDescription");
                try w.text(self.status_description orelse reason(self.status));
            }
            if (full or self.headers_changed) {
                try w.text("headers");
                try w.headers(self.headers.items);
            }
            if (self.body) |body| {
                try w.text("body");
                try w.bytes(body);
            }
        } else {
            try w.head(5, if (self.body != null) 5 else 4);
            try w.text("method");
            try w.text(self.method);
            try w.text("uri");
            try w.text(self.uri);
            try w.text("querystring");
            try w.text(self.querystring);
            try w.text("headers");
            try w.headers(self.headers.items);
            if (self.body) |body| {
                try w.text("body");
                try w.head(5, 2);
                try w.text("action");
                try w.text("replace");
                try w.text("data");
                try w.bytes(body);
            }
        }
        return w.result();
    }
};

/// Continue with the event's request unchanged (request triggers), or keep the response (response triggers).
pub fn pass(ev: *const Event) !Result {
    if (ev.response) |res| {
        var w = Writer{};
        try w.head(5, 1);
        try w.text("status");
        try w.head(0, res.status);
        return w.result();
    }
    var w = Writer{};
    try w.head(5, 0);
    return w.result();
}

/// A whole response in one call: a status, a content type and a body.
pub fn respond(status: u16, content_type: []const u8, body: []const u8) !Result {
    var res = Response.init(status);
    try res.setHeader("Content-Type", content_type);
    try res.setBody(body);
    return res.finish();
}

/// A function error on purpose: {"errorType", "errorMessage"} (Lambda's handled error).
pub fn fail(error_type: []const u8, message: []const u8) Result {
    return errorDocument(error_type, message) catch out_of_memory_result();
}

fn reason(status: u16) []const u8 {
    return switch (status) {
        200 => "OK", 201 => "Created", 204 => "No Content", 301 => "Moved Permanently", 302 => "Found",
        303 => "See Other", 304 => "Not Modified", 307 => "Temporary Redirect", 308 => "Permanent Redirect",
        400 => "Bad Request", 401 => "Unauthorized", 403 => "Forbidden", 404 => "Not Found",
        405 => "Method Not Allowed", 429 => "Too Many Requests", 500 => "Internal Server Error",
        502 => "Bad Gateway", 503 => "Service Unavailable", 504 => "Gateway Timeout",
        else => "",
    };
}

// --- log, env, fetch, kv ---------------------------------------------------------------------------------------

pub const Level = enum(i32) { debug = 0, info = 1, warn = 2, err = 3 };

/// One line in the function's log stream (`edgefn logs`).
pub fn log(level: Level, message: []const u8) void {
    host.log(@intFromEnum(level), message.ptr, message.len);
}

/// `log` with std.fmt formatting (a line that cannot be formatted for lack of memory is dropped).
pub fn logf(level: Level, comptime format: []const u8, args: anytype) void {
    const line = fmt(format, args) catch return;
    log(level, line);
}

/// The function's environment variable `name` (its manifest env and its secrets), or null.
pub fn env(name: []const u8) !?[]const u8 {
    var cap: usize = 128;
    while (true) {
        const buf = try allocator().alloc(u8, cap);
        const n = host.env_get(name.ptr, name.len, buf.ptr, buf.len);
        if (n < 0) return null;
        const len: usize = @intCast(n);
        if (len <= cap) return buf[0..len];
        cap = len;
    }
}

fn pendingResult(comptime take: fn ([*]u8, usize) callconv(.c) i32, len: i32) ![]const u8 {
    if (len < 0) return error.HostRefused;
    const buf = try allocator().alloc(u8, @intCast(len));
    const n = take(buf.ptr, buf.len);
    if (n < 0 or @as(usize, @intCast(n)) > buf.len) return error.HostRefused;
    return buf[0..@intCast(n)];
}

pub const FetchResponse = struct {
    status: u16,
    headers: Headers,
    body: []const u8,
};

pub const FetchRequest = struct {
    method: []const u8 = "GET",
    url: []const u8,
    headers: []const [2][]const u8 = &.{},
    body: ?[]const u8 = null,
};

/// The reason of the last fetch or kv call that failed (the host's words), for a log line or an error page.
pub var last_error: []const u8 = "";

/// One outbound request, to the manifest's `allowed_hosts` only. error.FetchFailed: see `last_error`.
pub fn fetch(req: FetchRequest) !FetchResponse {
    var w = Writer{};
    try w.head(5, if (req.body != null) 4 else 3);
    try w.text("method");
    try w.text(req.method);
    try w.text("url");
    try w.text(req.url);
    try w.text("headers");
    var list: std.ArrayList(Header) = .empty;
    for (req.headers) |h| try list.append(allocator(), .{ .name = try std.ascii.allocLowerString(allocator(), h[0]), .key = h[0], .value = h[1] });
    try w.headers(list.items);
    if (req.body) |body| {
        try w.text("body");
        try w.bytes(body);
    }
    const doc = w.buf.items;
    const answer = try pendingResult(host.fetch_result, host.fetch(doc.ptr, doc.len));
    var r = Reader{ .data = answer };
    var out = FetchResponse{ .status = 0, .headers = .{}, .body = "" };
    var n = try r.mapLen();
    while (n > 0) : (n -= 1) {
        const key = try r.textStr();
        if (std.mem.eql(u8, key, "error")) {
            last_error = try r.textStr();
            return error.FetchFailed;
        } else if (std.mem.eql(u8, key, "status")) {
            out.status = @intCast(try r.uint());
        } else if (std.mem.eql(u8, key, "headers")) {
            out.headers = try r.headerMap();
        } else if (std.mem.eql(u8, key, "body")) {
            out.body = try r.anyStr();
        } else try r.skip();
    }
    return out;
}

/// One key-value namespace the manifest grants (`kv = ["name"]`); a refusal is error.KvRefused (see `last_error`).
pub const Kv = struct {
    namespace: []const u8,

    fn call(self: Kv, w: *Writer, op: []const u8) !Reader {
        try w.text("op");
        try w.text(op);
        try w.text("namespace");
        try w.text(self.namespace);
        const doc = w.buf.items;
        const answer = try pendingResult(host.kv_result, host.kv(doc.ptr, doc.len));
        const r = Reader{ .data = answer };
        var probe = r;
        var count = try probe.mapLen();
        while (count > 0) : (count -= 1) {
            const key = try probe.textStr();
            if (std.mem.eql(u8, key, "error")) {
                last_error = try probe.textStr();
                return error.KvRefused;
            }
            try probe.skip();
        }
        return r;
    }

    /// The value of `key`, or null.
    pub fn get(self: Kv, key: []const u8) !?[]const u8 {
        var w = Writer{};
        try w.head(5, 3);
        try w.text("key");
        try w.bytes(key);
        var r = try self.call(&w, "get");
        var n = try r.mapLen();
        var found = false;
        var value: []const u8 = "";
        while (n > 0) : (n -= 1) {
            const k = try r.textStr();
            if (std.mem.eql(u8, k, "found")) found = try r.boolean() else if (std.mem.eql(u8, k, "value")) value = try r.anyStr() else try r.skip();
        }
        return if (found) value else null;
    }

    /// Set `key` to `value`; a `ttl_s` (at least 1) makes it expire.
    pub fn put(self: Kv, key: []const u8, value: []const u8, ttl_s: ?u32) !void {
        var w = Writer{};
        try w.head(5, if (ttl_s != null) 5 else 4);
        try w.text("key");
        try w.bytes(key);
        try w.text("value");
        try w.bytes(value);
        if (ttl_s) |ttl| {
            try w.text("ttl");
            try w.head(0, ttl);
        }
        _ = try self.call(&w, "put");
    }

    /// Remove `key`; true if it had a value.
    pub fn delete(self: Kv, key: []const u8) !bool {
        var w = Writer{};
        try w.head(5, 3);
        try w.text("key");
        try w.bytes(key);
        var r = try self.call(&w, "delete");
        var n = try r.mapLen();
        var deleted = false;
        while (n > 0) : (n -= 1) {
            const k = try r.textStr();
            if (std.mem.eql(u8, k, "deleted")) deleted = try r.boolean() else try r.skip();
        }
        return deleted;
    }

    pub const Page = struct { keys: []const []const u8, cursor: ?[]const u8 };

    /// One page of keys starting with `prefix` (byte order), after `cursor`.
    pub fn list(self: Kv, prefix: []const u8, cursor: ?[]const u8) !Page {
        var w = Writer{};
        try w.head(5, if (cursor != null) 4 else 3);
        try w.text("prefix");
        try w.bytes(prefix);
        if (cursor) |c| {
            try w.text("cursor");
            try w.text(c);
        }
        var r = try self.call(&w, "list");
        var n = try r.mapLen();
        var page = Page{ .keys = &.{}, .cursor = null };
        while (n > 0) : (n -= 1) {
            const k = try r.textStr();
            if (std.mem.eql(u8, k, "keys")) {
                const count = try r.arrayLen();
                const keys = try allocator().alloc([]const u8, count);
                for (keys) |*slot| slot.* = try r.anyStr();
                page.keys = keys;
            } else if (std.mem.eql(u8, k, "cursor")) {
                page.cursor = if (r.peekNull()) blk: {
                    try r.skip();
                    break :blk null;
                } else try r.textStr();
            } else try r.skip();
        }
        return page;
    }
};

pub fn kv(namespace: []const u8) Kv {
    return .{ .namespace = namespace };
}

// --- CBOR ------------------------------------------------------------------------------------------------------

const Writer = struct {
    buf: std.ArrayList(u8) = .empty,

    fn head(self: *Writer, major: u8, n: u64) !void {
        const m = major << 5;
        const a = allocator();
        if (n < 24) {
            try self.buf.append(a, m | @as(u8, @intCast(n)));
        } else if (n <= 0xff) {
            try self.buf.appendSlice(a, &.{ m | 24, @intCast(n) });
        } else if (n <= 0xffff) {
            try self.buf.appendSlice(a, &.{ m | 25, @intCast(n >> 8), @intCast(n & 0xff) });
        } else if (n <= 0xffff_ffff) {
            try self.buf.append(a, m | 26);
            try self.buf.appendSlice(a, &std.mem.toBytes(std.mem.nativeToBig(u32, @intCast(n))));
        } else {
            try self.buf.append(a, m | 27);
            try self.buf.appendSlice(a, &std.mem.toBytes(std.mem.nativeToBig(u64, n)));
        }
    }

    fn text(self: *Writer, s: []const u8) !void {
        try self.head(3, s.len);
        try self.buf.appendSlice(allocator(), s);
    }

    fn bytes(self: *Writer, s: []const u8) !void {
        try self.head(2, s.len);
        try self.buf.appendSlice(allocator(), s);
    }

    fn headers(self: *Writer, list: []const Header) !void {
        // group repeats under their lowercase name, in first-seen order
        var names: std.ArrayList([]const u8) = .empty;
        outer: for (list) |h| {
            for (names.items) |seen| if (std.mem.eql(u8, seen, h.name)) continue :outer;
            try names.append(allocator(), h.name);
        }
        try self.head(5, names.items.len);
        for (names.items) |name| {
            var count: usize = 0;
            for (list) |h| {
                if (std.mem.eql(u8, h.name, name)) count += 1;
            }
            try self.text(name);
            try self.head(4, count);
            for (list) |h| {
                if (!std.mem.eql(u8, h.name, name)) continue;
                try self.head(5, 2);
                try self.text("key");
                try self.text(h.key);
                try self.text("value");
                try self.text(h.value);
            }
        }
    }

    fn result(self: *Writer) Result {
        return (@as(u64, @intFromPtr(self.buf.items.ptr)) << 32) | self.buf.items.len;
    }
};

const Reader = struct {
    data: []const u8,
    pos: usize = 0,

    fn byte(self: *Reader) !u8 {
        if (self.pos >= self.data.len) return error.InvalidEvent;
        self.pos += 1;
        return self.data[self.pos - 1];
    }

    fn argument(self: *Reader, info: u8) !u64 {
        if (info < 24) return info;
        const size: usize = switch (info) {
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            else => return error.InvalidEvent, // indefinite lengths are never used
        };
        if (self.pos + size > self.data.len) return error.InvalidEvent;
        var n: u64 = 0;
        for (self.data[self.pos .. self.pos + size]) |b| n = (n << 8) | b;
        self.pos += size;
        return n;
    }

    fn item(self: *Reader, want: u8) !u64 {
        const first = try self.byte();
        if (first >> 5 != want) return error.InvalidEvent;
        return self.argument(first & 31);
    }

    fn uint(self: *Reader) !u64 {
        return self.item(0);
    }

    fn mapLen(self: *Reader) !usize {
        return @intCast(try self.item(5));
    }

    fn arrayLen(self: *Reader) !usize {
        return @intCast(try self.item(4));
    }

    fn str(self: *Reader, major: u8) ![]const u8 {
        const n: usize = @intCast(try self.item(major));
        if (self.pos + n > self.data.len) return error.InvalidEvent;
        defer self.pos += n;
        return self.data[self.pos .. self.pos + n];
    }

    fn textStr(self: *Reader) ![]const u8 {
        return self.str(3);
    }

    /// A byte or text string.
    fn anyStr(self: *Reader) ![]const u8 {
        if (self.pos >= self.data.len) return error.InvalidEvent;
        return self.str(if (self.data[self.pos] >> 5 == 2) 2 else 3);
    }

    fn boolean(self: *Reader) !bool {
        return switch (try self.byte()) {
            0xf4 => false,
            0xf5 => true,
            else => error.InvalidEvent,
        };
    }

    fn peekNull(self: *const Reader) bool {
        return self.pos < self.data.len and self.data[self.pos] == 0xf6;
    }

    fn skip(self: *Reader) !void {
        const first = try self.byte();
        const major = first >> 5;
        const n = try self.argument(first & 31);
        switch (major) {
            0, 1, 7 => {},
            2, 3 => {
                if (self.pos + n > self.data.len) return error.InvalidEvent;
                self.pos += @intCast(n);
            },
            4 => for (0..@intCast(n)) |_| try self.skip(),
            5 => for (0..@intCast(n * 2)) |_| try self.skip(),
            6 => try self.skip(),
            else => return error.InvalidEvent,
        }
    }

    fn headerMap(self: *Reader) !Headers {
        var list: std.ArrayList(Header) = .empty;
        var n = try self.mapLen();
        while (n > 0) : (n -= 1) {
            const name = try self.textStr();
            var m = try self.arrayLen();
            while (m > 0) : (m -= 1) {
                var h = Header{ .name = name, .key = name, .value = "" };
                var fields = try self.mapLen();
                while (fields > 0) : (fields -= 1) {
                    const k = try self.textStr();
                    if (std.mem.eql(u8, k, "key")) h.key = try self.textStr() else if (std.mem.eql(u8, k, "value")) h.value = try self.textStr() else try self.skip();
                }
                try list.append(allocator(), h);
            }
        }
        return .{ .list = list.items };
    }

    fn body(self: *Reader) !?[]const u8 {
        var out: ?[]const u8 = null;
        var n = try self.mapLen();
        while (n > 0) : (n -= 1) {
            const k = try self.textStr();
            if (std.mem.eql(u8, k, "data")) out = try self.anyStr() else try self.skip();
        }
        return out;
    }

    fn request(self: *Reader) !Request {
        var r = Request{};
        var n = try self.mapLen();
        while (n > 0) : (n -= 1) {
            const k = try self.textStr();
            if (std.mem.eql(u8, k, "clientIp")) r.client_ip = try self.textStr()
            else if (std.mem.eql(u8, k, "method")) r.method = try self.textStr()
            else if (std.mem.eql(u8, k, "uri")) r.uri = try self.textStr()
            else if (std.mem.eql(u8, k, "querystring")) r.querystring = try self.textStr()
            else if (std.mem.eql(u8, k, "headers")) r.headers = try self.headerMap()
            else if (std.mem.eql(u8, k, "body")) r.body = try self.body()
            else try self.skip();
        }
        return r;
    }

    fn response(self: *Reader) !Response {
        var r = Response{};
        var n = try self.mapLen();
        while (n > 0) : (n -= 1) {
            const k = try self.textStr();
            if (std.mem.eql(u8, k, "status")) r.status = @intCast(try self.uint())
            else if (std.mem.eql(u8, k, "statusDescription")) r.status_description = try self.textStr()
            else if (std.mem.eql(u8, k, "headers")) r.headers = try self.headerMap()
            else if (std.mem.eql(u8, k, "body")) r.body = try self.body()
            else try self.skip();
        }
        return r;
    }

    fn event(self: *Reader) !Event {
        var ev = Event{};
        var n = try self.mapLen();
        while (n > 0) : (n -= 1) {
            const k = try self.textStr();
            if (std.mem.eql(u8, k, "config")) {
                var m = try self.mapLen();
                while (m > 0) : (m -= 1) {
                    const ck = try self.textStr();
                    if (std.mem.eql(u8, ck, "eventType")) {
                        const t = try self.textStr();
                        ev.event_type = if (std.mem.eql(u8, t, "viewer-request")) .viewer_request else if (std.mem.eql(u8, t, "origin-request")) .origin_request else if (std.mem.eql(u8, t, "origin-response")) .origin_response else if (std.mem.eql(u8, t, "viewer-response")) .viewer_response else .unknown;
                    } else if (std.mem.eql(u8, ck, "requestId")) ev.request_id = try self.textStr()
                    else if (std.mem.eql(u8, ck, "functionName")) ev.function_name = try self.textStr()
                    else if (std.mem.eql(u8, ck, "distributionDomainName")) ev.distribution_domain_name = try self.textStr()
                    else try self.skip();
                }
            } else if (std.mem.eql(u8, k, "request")) ev.request = try self.request()
            else if (std.mem.eql(u8, k, "response")) ev.response = try self.response()
            else try self.skip();
        }
        if (self.pos != self.data.len) return error.InvalidEvent;
        return ev;
    }
};

// --- the ABI's exports -------------------------------------------------------------------------------------------

fn errorDocument(error_type: []const u8, message: []const u8) !Result {
    var w = Writer{};
    try w.head(5, 2);
    try w.text("errorType");
    try w.text(error_type);
    try w.text("errorMessage");
    try w.text(message);
    return w.result();
}

// built before any allocation can fail: reporting an exhausted memory needs none
const oom_document = blk: {
    const t = "OutOfMemory";
    const m = "out of memory: the function ran out of memory (manifest key 'memory_mb')";
    break :blk [_]u8{0xa2} ++ [_]u8{0x69} ++ "errorType".* ++ [_]u8{ 0x60 + t.len } ++ t.* ++ [_]u8{0x6c} ++ "errorMessage".* ++ [_]u8{ 0x78, m.len } ++ m.*;
};

fn out_of_memory_result() Result {
    return (@as(u64, @intFromPtr(&oom_document)) << 32) | oom_document.len;
}

fn abiV1() callconv(.c) void {}

fn alloc(size: usize) callconv(.c) usize {
    _ = arena_state.reset(.retain_capacity); // a new invocation: recycle every buffer of the last one
    last_error = "";
    const buf = allocator().alloc(u8, size) catch return 0;
    return @intFromPtr(buf.ptr);
}

fn handleExport(ptr: [*]const u8, len: usize) callconv(.c) u64 {
    var reader = Reader{ .data = ptr[0..len] };
    const ev = reader.event() catch |e| return switch (e) {
        error.OutOfMemory => out_of_memory_result(),
        else => fail("InvalidEvent", "the event is not a valid edgefn event document"),
    };
    const outcome = root.handle(&ev);
    return switch (@typeInfo(@TypeOf(outcome))) {
        .error_union => outcome catch |e| handlerError(e),
        else => outcome,
    };
}

fn handlerError(e: anyerror) Result {
    if (e == error.OutOfMemory) return out_of_memory_result();
    return fail(@errorName(e), if (last_error.len > 0) last_error else "the handler returned an error");
}

comptime {
    if (!@hasDecl(root, "handle")) @compileError("an edgefn Zig function declares `pub fn handle(ev: *const edgefn.Event) !edgefn.Result`");
    @export(&abiV1, .{ .name = "edgefn_abi_v1" });
    @export(&alloc, .{ .name = "edgefn_alloc" });
    @export(&handleExport, .{ .name = "edgefn_handle" });
}
