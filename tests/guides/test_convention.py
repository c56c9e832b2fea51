"""Every fenced block of the README, docs/*.md and the examples' guides follows the convention
of tests/guides/markdown.py: it names its language, and a command block that does not run
here says why. The runner itself: the first failing command fails the guide and names its
block, what a guide started is ended, and only what the guide declares is substituted."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.guides.conftest import GUIDE_FILES, guide_id
from tests.guides.markdown import Guide, parse_guide
from tests.guides.runner import GuideRun

FILES = [pytest.param(p, id=guide_id(p)) for p in GUIDE_FILES]


@pytest.mark.parametrize("path", FILES)
def test_every_block_names_its_language_and_every_marker_parses(path: Path) -> None:
    guide = parse_guide(path)
    assert guide.errors == []
    unnamed = [b.where for b in guide.blocks if not b.language]
    assert unnamed == [], "name the language: sh (runs), text, toml, json, python..."


@pytest.mark.parametrize("path", FILES)
def test_python_blocks_compile(path: Path) -> None:
    for block in parse_guide(path).blocks:
        if block.language == "python":
            compile(block.text, block.where, "exec")


def _guide(tmp_path: Path, text: str) -> Guide:
    path = tmp_path / "GUIDE.md"
    path.write_text(text)
    return parse_guide(path)


def test_a_skip_without_a_reason_is_an_error(tmp_path: Path) -> None:
    guide = _guide(tmp_path, "<!-- guide: skip -->\n```sh\ntrue\n```\n")
    assert guide.errors == ["GUIDE.md:1: 'guide: skip' needs a reason"]
    reasoned = _guide(tmp_path, "<!-- guide: skip needs a phone -->\n```sh\ntrue\n```\n")
    assert reasoned.errors == []
    assert reasoned.commands() == []
    assert reasoned.blocks[0].skip == "needs a phone"


def test_the_first_failing_command_fails_the_guide_and_names_its_block(
    tmp_path: Path, run: Callable[[Guide], GuideRun]
) -> None:
    guide = _guide(
        tmp_path,
        "```sh\necho one > one\n```\n\ntext\n\n```sh\nfalse\necho never > never\n```\n",
    )
    result = run(guide)
    assert result.returncode != 0
    assert "command failed (exit 1) in the block at GUIDE.md:7" in result.output
    assert (result.folder / "one").exists()
    assert not (result.folder / "never").exists()
    passing = run(_guide(tmp_path, "```sh\necho one > one\n```\n"))
    assert passing.returncode == 0, passing.explain()


def test_what_a_guide_started_in_the_background_is_ended(
    tmp_path: Path, run: Callable[[Guide], GuideRun]
) -> None:
    result = run(_guide(tmp_path, "```sh\nsleep 300 &\necho $! > sleeper.pid\n```\n"))
    assert result.returncode == 0, result.explain()
    pid = int((result.folder / "sleeper.pid").read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()


def test_only_declared_ports_and_text_are_substituted(
    tmp_path: Path, run: Callable[[Guide], GuideRun]
) -> None:
    guide = _guide(
        tmp_path,
        "<!-- guide: port 8443 -->\n<!-- guide: replace /etc/door => {guide_dir}/door -->\n"
        "```sh\necho 127.0.0.1:8443 18443 8080 '/etc/door' /etc/other > said\n```\n",
    )
    result = run(guide)
    assert result.returncode == 0, result.explain()
    port = result.ports[8443]
    said = (result.folder / "said").read_text().split()
    assert said == [f"127.0.0.1:{port}", "18443", "8080", f"{result.folder}/door", "/etc/other"]


def test_a_guide_starts_in_an_empty_folder_with_a_fresh_home_and_our_ostiary(
    tmp_path: Path, run: Callable[[Guide], GuideRun]
) -> None:
    (tmp_path / "app.py").write_text("print('app')\n")
    guide = _guide(
        tmp_path,
        "<!-- guide: files app.py -->\n```sh\n"
        'ls -A > listing\necho "$HOME" > home.txt\ncommand -v ostiary > which\n```\n',
    )
    result = run(guide)
    assert result.returncode == 0, result.explain()
    assert (result.folder / "listing").read_text().split() == ["app.py", "listing"]
    assert (result.folder / "home.txt").read_text().strip() == str(result.top / "home")
    ostiary = Path((result.folder / "which").read_text().strip())
    assert ostiary.parent == Path(sys.executable).parent


def test_a_guide_that_hangs_is_stopped_at_its_timeout(
    tmp_path: Path, run: Callable[[Guide], GuideRun]
) -> None:
    result = run(_guide(tmp_path, "<!-- guide: timeout 1 -->\n```sh\nsleep 300\n```\n"))
    assert result.returncode == -1
    assert "guide: timed out after 1s" in result.output
    assert result.seconds < 10
