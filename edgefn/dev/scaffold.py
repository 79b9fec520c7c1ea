"""`edgefn init DIR`: a working project — manifest, one function per chosen trigger, a local origin, a README."""

from __future__ import annotations

import re
from pathlib import Path

from ..core.exceptions import ScaffoldError

TRIGGERS = ("viewer-request", "origin-request", "origin-response", "viewer-response")

C_ORIGIN = """\
/* origin: a function acting as this app's origin (replace it with origin = "https://..." in edgefn.toml). */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_out res = edgefn_new_response(200, "OK");
    edgefn_set_header(&res, "Content-Type", "text/html; charset=utf-8");
    edgefn_set_header(&res, "Cache-Control", "max-age=10");
    edgefn_buf body = {0};
    edgefn_buf_add_cstr(&body, "<!doctype html><h1>Hello from edgefn</h1><p>You asked for ");
    edgefn_buf_add(&body, ev->request.uri);
    edgefn_buf_add_cstr(&body, "</p>\\n");
    edgefn_set_body_str(&res, edgefn_buf_str(&body));
    return edgefn_finish(&res);
}
"""

C_REQUEST_HOOK = """\
/* {trigger}: runs {when}. Return the request (changed or not) to continue, or a response to answer now. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {{
    if (edgefn_str_eq(ev->request.uri, "/blocked"))
        return edgefn_respond(403, "text/plain", "blocked at {trigger}\\n");
    edgefn_out req = edgefn_edit_request(ev);
    edgefn_set_header(&req, "x-{trigger}", "seen");
    return edgefn_finish(&req);
}}
"""

C_RESPONSE_HOOK = """\
/* {trigger}: runs {when}. Return the (changed) response. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {{
    edgefn_out res = edgefn_edit_response(ev);
    edgefn_set_header(&res, "x-{trigger}", "seen");
    return edgefn_finish(&res);
}}
"""

PY_ORIGIN = """\
\"\"\"origin: a function acting as this app's origin (replace it with origin = "https://..." in edgefn.toml).\"\"\"

from edgefn_guest import Request, Response


def handler(event):
    request: Request = event.request
    html = f"<!doctype html><h1>Hello from edgefn</h1><p>You asked for {request.uri}</p>\\n"
    return Response(200, html, headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "max-age=10"})
"""

PY_REQUEST_HOOK = """\
\"\"\"{trigger}: runs {when}. Return the request (changed or not) to continue, or a Response to answer now.\"\"\"

from edgefn_guest import Request, Response


def {handler}(request: Request):
    if request.uri == "/blocked":
        return Response(403, "blocked at {trigger}\\n", headers={{"Content-Type": "text/plain"}})
    request.headers["x-{trigger}"] = "seen"
    return request
"""

PY_RESPONSE_HOOK = """\
\"\"\"{trigger}: runs {when}. Return the (changed) response.\"\"\"

from edgefn_guest import Response


def {handler}(response: Response):
    response.headers["x-{trigger}"] = "seen"
    return response
"""

WHEN = {
    "viewer-request": "on every request, before the cache",
    "origin-request": "on a cache miss, before the origin",
    "origin-response": "after the origin answers, before the response is cached",
    "viewer-response": "before every response goes to the viewer (hits and misses)",
}

README = """\
# {name}

An edgefn app made by `edgefn init`.

```sh
edgefn dev                 # serve on http://127.0.0.1:8787/, rebuild and reload on every save
curl -i http://127.0.0.1:8787/
curl -i http://127.0.0.1:8787/blocked
```

- `edgefn.toml` declares the functions and the behavior that runs them.
- `src/origin.{ext}` acts as the origin; each trigger has its own function in `src/`.
- `edgefn events sample viewer-request > event.json && edgefn invoke viewer-request --event event.json`
  runs one function on one event; `edgefn dev --record events/` saves real events to replay.
"""


def init_project(directory: Path, lang: str, triggers: list[str]) -> list[Path]:
    """Write a new project into `directory` (which must not hold an edgefn.toml yet); returns the files."""
    directory = Path(directory)
    if (directory / "edgefn.toml").exists():
        raise ScaffoldError(f"{directory / 'edgefn.toml'} already exists; pick an empty directory")
    unknown = [t for t in triggers if t not in TRIGGERS]
    if unknown:
        raise ScaffoldError(f"unknown trigger {unknown[0]!r}; choose from {', '.join(TRIGGERS)}")
    if lang not in ("c", "python"):
        raise ScaffoldError(f"--lang {lang}: choose c or python")
    name = re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-") or "edgefn-app"
    ext = "c" if lang == "c" else "py"
    # a Python instance starts at ~13 MB of linear memory and a request costs ~1 M fuel
    limits = "memory_mb = 16\n" if lang == "c" else "memory_mb = 64\nfuel = 200_000_000\nreuse_instances = true\n"
    files: dict[str, str] = {f"src/origin.{ext}": C_ORIGIN if lang == "c" else PY_ORIGIN}
    manifest = [f'[app]\nname = "{name}"\n', f'[functions.origin]\nsource = "src/origin.{ext}"\n{limits}']
    hooks = []
    for trigger in triggers:
        handler = trigger.replace("-", "_")
        if lang == "c":
            template = C_REQUEST_HOOK if trigger.endswith("request") else C_RESPONSE_HOOK
        else:
            template = PY_REQUEST_HOOK if trigger.endswith("request") else PY_RESPONSE_HOOK
        path = f"src/{handler}.{ext}"
        files[path] = template.format(trigger=trigger, when=WHEN[trigger], handler=handler)
        manifest.append(f'[functions.{trigger}]\nsource = "{path}"\n{limits}timeout_ms = 1000\n')
        hooks.append(f'{handler} = {{ function = "{trigger}" }}')
    manifest.append("[default_behavior]\nfunction = \"origin\"\n" + "".join(f"{h}\n" for h in hooks))
    files["edgefn.toml"] = "\n".join(manifest)
    files["README.md"] = README.format(name=name, ext=ext)
    files[".gitignore"] = ".edgefn/\n"
    written = []
    for rel, text in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        written.append(target)
    return written
