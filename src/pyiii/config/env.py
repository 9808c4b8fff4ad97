"""``${VAR}`` / ``${VAR:default}`` expansion of the config text, outside YAML comments."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pyiii.errors import ConfigError

_PLACEHOLDER = re.compile(r"\$\{([^}:]+)(?::([^}]*))?\}")
_BLOCK_INDICATOR = re.compile(r"[|>][-+0-9]*\s*(?:#.*)?$")
_ENGINE_VERSION_DEFAULT = "__III_ENGINE_VERSION__"


def _engine_version() -> str:
    try:
        from importlib.metadata import version

        return version("pyiii")
    except Exception:
        return "0.0.0"


def expand_env(text: str, environ: Mapping[str, str], source: str) -> str:
    """Expand ``${VAR}`` / ``${VAR:default}`` outside YAML comments.

    A ``#`` starts a comment only at the start of a line or after whitespace,
    and never inside a quoted scalar ('...' or "...", which may span lines) or
    inside a block scalar (``|`` / ``>``). Line numbers are preserved.
    """

    def substitute(segment: str, lineno: int) -> str:
        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is None:
                raise ConfigError(
                    f"{source}: line {lineno}: environment variable '{name}' is not set and "
                    f"'{match.group(0)}' has no default; set {name} or write "
                    f"'${{{name}:default}}'"
                )
            if default == _ENGINE_VERSION_DEFAULT:
                return _engine_version()
            return default

        return _PLACEHOLDER.sub(one, segment) if "${" in segment else segment

    out: list[str] = []
    quote: str | None = None  # open quoted scalar carried across lines
    flow_depth = 0  # open [ / { collections, carried across lines
    block_indent: int | None = None  # inside a block scalar whose parent is at this column

    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        body = line.rstrip("\r\n")
        eol = line[len(body) :]
        if block_indent is not None:
            indent = len(body) - len(body.lstrip(" "))
            if not body.strip() or indent > block_indent:
                out.append(substitute(body, lineno) + eol)
                continue
            block_indent = None

        comment_at = len(body)
        prev_sig = ""  # last significant char outside quotes on this line ("" = none yet)
        node_col = len(body) - len(body.lstrip(" "))  # first node after "- " indicators
        seq_col = node_col  # column of the last "- " indicator
        i = 0
        while i < len(body):
            c = body[i]
            if quote is not None:
                if quote == '"' and c == "\\":
                    i += 2
                    continue
                if c == quote:
                    if quote == "'" and body[i + 1 : i + 2] == "'":
                        i += 2  # '' is an escaped quote
                        continue
                    quote = None
                    prev_sig = c
                i += 1
                continue
            if c in " \t":
                i += 1
                continue
            if c == "$" and (placeholder := _PLACEHOLDER.match(body, i)) is not None:
                if prev_sig in ("", "-"):
                    node_col = i
                prev_sig = "}"
                i = placeholder.end()  # its default may hold '#', quotes or braces
                continue
            before = body[i - 1] if i > 0 else " "
            if c == "#" and before in " \t":
                comment_at = i
                break
            if c == "-" and prev_sig in ("", "-") and body[i + 1 : i + 2] in (" ", "\t", ""):
                seq_col, prev_sig = i, "-"
                i += 1
                continue
            if prev_sig in ("", "-"):
                node_col = i
            starts_node = before in " \t[{," and prev_sig in ("", "-", ":", "?", "[", "{", ",")
            if c in "'\"" and starts_node:
                quote = c
            elif c in "[{" and starts_node:
                flow_depth += 1
            elif c in "]}" and flow_depth > 0:
                flow_depth -= 1
            elif c in "|>" and starts_node and flow_depth == 0 and _BLOCK_INDICATOR.match(body, i):
                block_indent = seq_col if prev_sig == "-" else node_col
            prev_sig = c
            i += 1
        out.append(substitute(body[:comment_at], lineno) + body[comment_at:] + eol)
    return "".join(out)
