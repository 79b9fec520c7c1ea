"""articles: a Python origin whose text helpers come from the layer textkit (layers = ["textkit:1"]).

GET /articles/<any title>  -> 301 to /articles/<its slug> when the path is not a slug yet
GET /articles/<slug>       -> 200, a page titled from the slug, naming the layer version it was built with
"""

import textkit
from edgefn_guest import Request, Response

PREFIX = "/articles/"


def handler(event):
    request: Request = event.request
    if not request.uri.startswith(PREFIX):
        return Response(404, "try /articles/Crème Brûlée: A Guide\n", headers={"Content-Type": "text/plain; charset=utf-8"})
    wanted = request.uri[len(PREFIX):]
    slug = textkit.slugify(wanted.replace("%20", " "))
    if slug != wanted:
        return Response(301, "", headers={"Location": PREFIX + slug})
    html = f"<!doctype html><h1>{textkit.title(slug)}</h1><p>slug {slug}, textkit {textkit.VERSION}</p>\n"
    return Response(200, html, headers={"Content-Type": "text/html; charset=utf-8", "X-Textkit": textkit.VERSION})
