"""Apache's configuration language → a tree of nodes that remember FILE:LINE.

This module owns tokenising, line continuation, comments, `${VAR}` expansion, Define/UnDefine,
Include/IncludeOptional and the conditional sections (<IfModule>, <IfDefine>, <IfVersion>,
<IfFile>, <IfDirective>, <IfSection>), which are resolved while reading, as Apache does.
It knows nothing about what a directive means: that is config/directives.py and build.py.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConfigError(Exception):
    """A configuration mistake, printed as `FILE:LINE: message`."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Node:
    """A directive (children is None) or a section such as <VirtualHost> (children a tuple)."""

    name: str  # as written, without angle brackets: "MaxRequestWorkers", "VirtualHost"
    args: tuple[str, ...]  # unquoted, unescaped, variables expanded
    file: str
    line: int
    children: tuple[Node, ...] | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"
