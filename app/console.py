"""What a run prints: the project's errors as one block."""

from __future__ import annotations

import os

from core.errors import VisionlabError


def print_error(error: VisionlabError) -> None:
    """The project's own errors as one short block on stderr: what is wrong and the fix."""
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel

    hint = "" if os.environ.get("HYDRA_FULL_ERROR") == "1" else "HYDRA_FULL_ERROR=1 shows the traceback"
    Console(stderr=True).print(Panel(escape(str(error)), title=type(error).__name__, title_align="left",
                                     subtitle=hint, subtitle_align="right", border_style="red",
                                     expand=False))
