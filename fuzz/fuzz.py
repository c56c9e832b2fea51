"""One atheris harness: ``python fuzz/fuzz.py NAME [libFuzzer options] [corpus folders]``.

NAME is a key of :data:`targets.TARGETS`. Ostiary's modules are imported under atheris's
instrumentation so that coverage guides the mutations; an exception that is not one of
:data:`targets.ALLOWED` is a crash (libFuzzer saves the input as ``crash-<sha1>``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["ostiary"]):
    import gateway_head  # noqa: F401 - instrumented here, used by the gateway_head target
    import targets


def main() -> None:
    name = sys.argv.pop(1)
    check = targets.TARGETS[name]  # a KeyError names the unknown harness
    allowed = targets.ALLOWED

    def one_input(data: bytes) -> None:
        try:
            check(data)
        except allowed:
            pass

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
