//! Hostile guest: answers a 200,000-byte body, over a small max_result_bytes. Expect InvalidResult (oversized).
const edgefn = @import("edgefn");

pub fn handle(ev: *const edgefn.Event) !edgefn.Result {
    _ = ev;
    const body = try edgefn.allocator().alloc(u8, 200_000);
    @memset(body, 'z');
    return edgefn.respond(200, "text/plain", body);
}
