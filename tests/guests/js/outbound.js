// fetch and kv from JavaScript (tests/test_js_guests.py): the origin's answer or the host's refusal, as JSON.
import { kv } from "edgefn";

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/fetch") {
      try {
        const answer = await fetch(url.searchParams.get("url"), { method: "POST", headers: { "x-probe": "js" }, body: "ping" });
        return Response.json({ status: answer.status, body: await answer.text(), type: answer.headers.get("content-type") });
      } catch (e) {
        return Response.json({ error: e.message }, { status: 502 });
      }
    }
    if (url.pathname === "/kv") {
      const ns = kv.namespace(url.searchParams.get("ns") || "data");
      try {
        const count = Number(ns.getText("count") || "0") + 1;
        ns.put("count", String(count));
        ns.put("tmp", "x", { ttl: 60 });
        const deleted = ns.delete("tmp");
        return Response.json({ count, deleted, keys: ns.list({ prefix: "c" }).keys });
      } catch (e) {
        return Response.json({ error: e.message, name: e.name }, { status: 500 });
      }
    }
    return new Response("outbound: /fetch?url=... or /kv", { status: 404 });
  },
};
