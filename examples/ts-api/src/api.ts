// A TypeScript function acting as the origin, written like a Worker: /api/<anything> answers JSON about
// the request it got (method, path, query, a header), with a greeting from its manifest env.
import type { Context, Env, Worker } from "edgefn";

interface Answer {
  greeting: string;
  method: string;
  path: string;
  query: Record<string, string>;
  userAgent: string | null;
  requestId: string;
}

const api: Worker = {
  async fetch(request: Request, env: Env, ctx: Context): Promise<Response> {
    const url = new URL(request.url);
    if (request.method !== "GET" && request.method !== "HEAD") {
      return Response.json({ error: `${request.method} is not allowed here` }, { status: 405, headers: { allow: "GET, HEAD" } });
    }
    const answer: Answer = {
      greeting: env.GREETING ?? "hello",
      method: request.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      userAgent: request.headers.get("user-agent"),
      requestId: ctx.requestId,
    };
    return Response.json(answer, { headers: { "cache-control": "no-store" } });
  },
};

export default api;
