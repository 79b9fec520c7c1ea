// viewer-request, in JavaScript: /js/old/<rest> answers 301 to /js/new/<rest> (querystring kept) before the
// cache and the origin; every other request continues, tagged with the path it asked for.
const MOVED = "/js/old/";

export function viewerRequest(request) {
  const url = new URL(request.url);
  if (url.pathname.startsWith(MOVED)) {
    const target = "/js/new/" + url.pathname.slice(MOVED.length) + url.search;
    const response = Response.redirect(target, 301);
    response.headers.set("cache-control", "max-age=3600");
    return response;
  }
  request.headers.set("x-js-viewer-request", url.pathname);
  return request;
}
