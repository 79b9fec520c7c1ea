// Hostile and failing paths, one per limit (tests/test_js_guests.py): each must end in its typed error.
export function viewerRequest(request) {
  const path = new URL(request.url).pathname;
  if (path === "/loop") for (;;) {}
  if (path === "/bomb") {  // typed arrays, 4 MiB at a time: memory, not fuel, runs out first
    const keep = [];
    for (;;) keep.push(new Uint8Array(4 << 20));
  }
  if (path === "/throw") throw new RangeError("asked to throw");
  if (path === "/reject") return Promise.reject(new TypeError("asked to reject"));
  if (path === "/never") return new Promise(() => {});
  if (path === "/big") return new Response(new Uint8Array(200_000));
  if (path === "/recurse") { const down = (n) => down(n + 1) + 1; return down(0); }
  if (path === "/wrong") return 42;
  return new Response("fine");
}
