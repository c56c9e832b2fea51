"""Run every parser harness for a bounded time: ``python fuzz/run.py --minutes N``.

``.ci/run`` calls it with ``--seconds`` so that all harnesses together stay near a minute.
Each harness runs in its own process on its seed corpus (``fuzz/corpus/<name>/``, read
only: new inputs go to a scratch folder unless ``--keep``). Prints executions per harness
and exits non-zero when any harness crashed; the crashing inputs are left in ``--artifacts``
(default ``fuzz/artifacts/``) for a regression test under ``tests/fuzz_regressions/``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STAT = re.compile(r"^#(\d+)\s", re.MULTILINE)


def run_harness(name: str, seconds: int, artifacts: Path, keep: bool) -> dict[str, object]:
    seeds = HERE / "corpus" / name
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        corpus = seeds if keep else Path(scratch)
        command = [
            sys.executable,
            str(HERE / "fuzz.py"),
            name,
            f"-max_total_time={seconds}",
            f"-artifact_prefix={artifacts}/{name}-",
            "-rss_limit_mb=2048",
            "-max_len=8192",
            str(corpus),
            *([] if keep else [str(seeds)]),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    log = done.stderr
    match = _DONE.search(log)
    stats = _STAT.findall(log)
    runs = int(match.group(1)) if match else int(stats[-1]) if stats else 0
    crashed = done.returncode != 0
    if crashed:
        sys.stderr.write(log[-4000:])
    return {"harness": name, "runs": runs, "seconds": seconds, "crashed": crashed}


def main() -> int:
    import targets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="time per harness, in minutes")
    length.add_argument("--seconds", type=int, help="time per harness, in seconds")
    parser.add_argument("--only", nargs="*", choices=sorted(targets.TARGETS), help="harnesses")
    parser.add_argument("--artifacts", type=Path, default=HERE / "artifacts")
    parser.add_argument("--keep", action="store_true", help="add new inputs to the corpus")
    parser.add_argument(
        "--json",
        type=Path,
        default=HERE / "results" / "parsers.json",
        help="write the results here too (fuzz/report.py reads them)",
    )
    args = parser.parse_args()
    seconds = args.seconds or max(1, round((args.minutes or 1) * 60))
    args.artifacts.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.only or targets.TARGETS:
        result = run_harness(name, seconds, args.artifacts.resolve(), args.keep)
        results.append(result)
        verdict = "CRASH" if result["crashed"] else "ok"
        print(f"{name:14} {result['runs']:>10} executions in {seconds} s  {verdict}", flush=True)
    # Merged by harness into the earlier results, so that ``--only`` updates its rows only.
    args.json.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(args.json.read_text()) if args.json.exists() else []
    merged = {r["harness"]: r for r in [*earlier, *results]}
    args.json.write_text(json.dumps(list(merged.values()), indent=2) + "\n")
    return 1 if any(r["crashed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
