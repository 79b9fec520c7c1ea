"""`edgefn dev --record DIR`: keep every event that reaches a function, for `edgefn invoke` to replay."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..core.events import Event, to_json_document


class EventRecorder:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __call__(self, function: str, event: Event) -> None:
        folder = self.directory / function
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{stamp}-{event.config.event_type}-{event.config.request_id[:8]}.json"
        (folder / name).write_text(json.dumps(to_json_document(event), indent=2))
