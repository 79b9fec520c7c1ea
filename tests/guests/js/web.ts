// The Web APIs and async semantics a Worker author expects, answered as JSON (tests/test_js_guests.py).
import { env, log } from "edgefn";
import { shout } from "left-shout";  // an npm package in node_modules: bundled by the build

let instanceCounter = 0;  // fresh instance per request: always 1, unless reuse_instances

async function double(x: number): Promise<number> {
  await null;
  return x * 2;
}

export async function viewerRequest(request: Request, ctx: { requestId: string; eventType: string }): Promise<Response | Request> {
  instanceCounter += 1;
  const url = new URL(request.url);
  if (url.pathname === "/pass") {
    request.headers.set("x-seen-by", "web.ts");
    return request;
  }
  if (url.pathname === "/same") return request;
  if (url.pathname === "/rewrite") {
    url.pathname = "/rewritten/" + url.searchParams.get("to");
    return new Request(url.toString(), request);
  }
  const order: string[] = [];
  const p = Promise.resolve().then(() => order.push("then"));
  order.push("sync");
  await p;
  const all = await Promise.all([double(1), double(2), 3]);
  const settled = await Promise.allSettled([Promise.reject(new Error("x")), double(5)]);
  const raced = await Promise.race([double(10), new Promise(() => {})]);
  let caught = "";
  try { await Promise.reject(new Error("inner")); } catch (e) { caught = (e as Error).message; }
  const enc = new TextEncoder().encode("héllo ☃ 𝄞");
  const relative = new URL("../up?x=1#frag", "https://example.test/a/b/c");
  const headers = new Headers({ "X-One": "1" });
  headers.append("x-one", "2");
  headers.append("Set-Cookie", "a=1");
  headers.append("Set-Cookie", "b=2");
  log("info", "web.ts answered", url.pathname);
  return Response.json({
    order, all, settled: settled.map((s) => s.status), raced, caught,
    bytes: enc.length, roundTrip: new TextDecoder().decode(enc),
    relative: relative.href, host: url.host, query: url.searchParams.get("q"),
    one: headers.get("x-one"), cookies: headers.getSetCookie(), shout: shout("npm"),
    greeting: env.GREETING ?? null, missing: env.NOT_SET ?? null, counter: instanceCounter,
    eventType: ctx.eventType, requestId: ctx.requestId, method: request.method,
    body: await request.text(), userAgent: request.headers.get("user-agent"),
  }, { status: 200, headers: { "x-from": "web.ts" } });
}

export function viewerResponse(response: Response, request: Request): Response | void {
  if (new URL(request.url).pathname === "/keep") return;
  response.headers.set("x-viewer-response", String(response.status));
  return response;
}
