"""Markdown reports: sections of text, tables and plots, written atomically.

Generic helpers every stage's report section uses (training/report.py,
rl/report.py, the run report in cluster/); they live in data/, the lowest
folder, so that every folder above may import them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Report:
    title: str
    sections: list[str] = field(default_factory=list)

    def add(self, heading: str, *blocks: str) -> None:
        self.sections.append("\n\n".join([f"## {heading}", *blocks]))

    def write(self, path: Path) -> Path:
        """Write next to ``path`` and rename into place: never half a report."""
        text = "\n\n".join([f"# {self.title}", *self.sections]) + "\n"
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(text)
        os.replace(partial, path)
        return path


def table(frame: pd.DataFrame, floatfmt: str = ".4g", index: bool = True) -> str:
    """A DataFrame as a Markdown table."""
    return frame.to_markdown(floatfmt=floatfmt, index=index)


def image(path: Path, relative_to: Path, caption: str) -> str:
    return f"![{caption}]({os.path.relpath(path, relative_to)})"
