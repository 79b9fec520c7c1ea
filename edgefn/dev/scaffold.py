"""`edgefn init DIR`: a working project — manifest, one function per chosen trigger, a local origin, a README."""

from __future__ import annotations

import re
from pathlib import Path

from ..build.languages import LANGUAGES, language_named
from ..core.exceptions import ScaffoldError

#: the languages `edgefn init --lang` can write a project in
SCAFFOLD_LANGUAGES = tuple(lang.name for lang in LANGUAGES if lang.scaffold is not None)

TRIGGERS = ("viewer-request", "origin-request", "origin-response", "viewer-response")

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
    language = language_named(lang)
    if language is None or language.scaffold is None:
        raise ScaffoldError(f"--lang {lang}: choose {' or '.join(SCAFFOLD_LANGUAGES)}")
    scaffold = language.scaffold
    name = re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-") or "edgefn-app"
    ext = language.suffixes[0].lstrip(".")
    limits = scaffold.limits
    files: dict[str, str] = {f"src/origin.{ext}": scaffold.origin}
    manifest = [f'[app]\nname = "{name}"\n', f'[functions.origin]\nsource = "src/origin.{ext}"\n{limits}']
    hooks = []
    for trigger in triggers:
        handler = trigger.replace("-", "_")
        template = scaffold.request_hook if trigger.endswith("request") else scaffold.response_hook
        path = f"src/{handler}.{ext}"
        export = handler.split("_")[0] + "".join(w.title() for w in handler.split("_")[1:])  # a JS export: viewerRequest
        files[path] = template.format(trigger=trigger, when=WHEN[trigger], handler=handler, export=export)
        manifest.append(f'[functions.{trigger}]\nsource = "{path}"\n{limits}timeout_ms = 1000\n')
        hooks.append(f'{handler} = {{ function = "{trigger}" }}')
    manifest.append("[default_behavior]\nfunction = \"origin\"\n" + "".join(f"{h}\n" for h in hooks))
    files.update(scaffold.extra_files())
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
