//! Hostile guest: takes memory through the SDK's arena, 1 MiB at a time, touching every page, until the
//! host refuses; the SDK turns error.OutOfMemory into the OutOfMemory function error. Expect MemoryLimitExceeded.
const edgefn = @import("edgefn");

pub fn handle(ev: *const edgefn.Event) !edgefn.Result {
    _ = ev;
    while (true) {
        const block = try edgefn.allocator().alloc(u8, 1 << 20);
        var i: usize = 0;
        while (i < block.len) : (i += 4096) @as(*volatile u8, &block[i]).* = 1;
    }
}
