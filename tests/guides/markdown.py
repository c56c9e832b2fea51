"""The fenced blocks of a guide, and the ``<!-- guide: ... -->`` markers that say how to run them.

The convention (kept in the markdown itself, so a reader sees what the test changes):

- Every fenced block names its language. ```` ```sh ```` blocks are commands: they run, in
  order, in one bash per guide. ```` ```python ```` blocks are compiled (and some are run by
  run only where marked). Any other language (``text``, ``toml``, ``json``, ``ini``, ``nginx``...)
  is shown only.
- ``<!-- guide: skip REASON -->`` on the line(s) before a ``sh`` block: not run here, for the
  stated reason (needs Entra, a real TPM, a phone...). A reason is required.
- ``<!-- guide: run -->`` before a ``python`` block: it runs too, in its place in the order
  (``python - <<'EOF'`` in the same bash, so it sees the files and exported variables).
- ``<!-- guide: port 8443 8080 -->`` anywhere: each of these port numbers, in the blocks that
  run, becomes a free port on this machine (the same one everywhere in the guide).
- ``<!-- guide: replace OLD => NEW -->`` anywhere: OLD becomes NEW in the blocks that run,
  applied in the order written; ``{guide_dir}`` in NEW is the folder the guide runs in.
- ``<!-- guide: files app.py device.py -->``: these files from the guide's folder are copied
  into the empty folder the guide runs in.
- A comment that opens with ``<!-- guide: setup REASON`` and holds shell lines until ``-->``:
  run before the first block (with the same substitutions); for what the machine the guide
  assumes already has (a distribution package's own configuration), never for a guide step.
- ``<!-- guide: timeout 60 -->``: seconds the whole guide may take (default 240).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

COMMAND_LANGUAGES = frozenset({"sh"})
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>```+|~~~+)\s*(?P<info>[^`\s]*)")
_MARKER = re.compile(r"<!--\s*guide:\s*(?P<body>.*?)\s*-->", re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, text, first line (1-based) and skip reason."""

    path: Path
    line: int
    language: str
    text: str
    skip: str | None = None
    run: bool = False

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


@dataclass
class Guide:
    """A markdown file's blocks and its declarations."""

    path: Path
    blocks: list[Block] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    replacements: list[tuple[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    timeout: float = 240.0
    errors: list[str] = field(default_factory=list)

    def commands(self) -> list[Block]:
        return [
            b
            for b in self.blocks
            if (b.language in COMMAND_LANGUAGES and b.skip is None)
            or (b.language == "python" and b.run)
        ]


def parse_guide(path: Path) -> Guide:
    """Read ``path``: blocks in order, markers applied; malformed markers in ``errors``."""
    guide = Guide(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    pending_skip: str | None = None
    pending_run = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<!--" in line and "guide:" in line:
            end = i
            while "-->" not in lines[end] and end + 1 < len(lines):
                end += 1
            comment = "\n".join(lines[i : end + 1])
            match = _MARKER.search(comment)
            if match is None:
                guide.errors.append(f"{path.name}:{i + 1}: unclosed guide marker")
            elif match.group("body") == "run":
                pending_run = True
            else:
                pending_skip = _apply_marker(guide, match.group("body"), i + 1) or pending_skip
            i = end + 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip() and (pending_skip is not None or pending_run):
                guide.errors.append(f"{path.name}:{i + 1}: a marker not followed by its block")
                pending_skip, pending_run = None, False
            i += 1
            continue
        marker, indent = fence.group("fence"), len(fence.group("indent"))
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(marker):
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        language = fence.group("info").lower()
        if pending_run and language != "python":
            guide.errors.append(f"{path.name}:{i + 1}: 'guide: run' is for python blocks")
        text = "\n".join(body) + "\n"
        guide.blocks.append(Block(path, i + 1, language, text, pending_skip, pending_run))
        pending_skip, pending_run = None, False
        i = j + 1
    return guide


def _apply_marker(guide: Guide, body: str, line: int) -> str | None:
    """Record a declaration; return a skip reason when the marker is a skip."""
    word, _, rest = body.partition(" ") if " " in body else (body, "", "")
    where = f"{guide.path.name}:{line}"
    if word == "skip":
        if not rest.strip():
            guide.errors.append(f"{where}: 'guide: skip' needs a reason")
            return None
        return rest.strip()
    if word == "port":
        try:
            guide.ports.extend(int(p) for p in rest.split())
        except ValueError:
            guide.errors.append(f"{where}: 'guide: port' takes port numbers")
    elif word == "replace":
        old, arrow, new = rest.partition("=>")
        if not arrow or not old.strip():
            guide.errors.append(f"{where}: 'guide: replace OLD => NEW'")
        else:
            guide.replacements.append((old.strip(), new.strip()))
    elif word == "files":
        guide.files.extend(rest.split())
    elif word == "setup":
        reason, _, script = rest.partition("\n")
        if not reason.strip() or not script.strip():
            guide.errors.append(f"{where}: 'guide: setup REASON' then shell lines")
        guide.setup.append(script)
    elif word == "timeout":
        guide.timeout = float(rest)
    else:
        guide.errors.append(f"{where}: unknown guide marker {word!r}")
    return None
