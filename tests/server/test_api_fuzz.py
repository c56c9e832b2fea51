"""Schemathesis against a live ``ca serve`` on SQLite and PostgreSQL (tests/server/api_fuzz.py).

A bounded run for the suite; ``fuzz/api.py --examples N`` runs the same campaign longer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ostiary.authority.folder import CAMaterial
from tests.server.api_fuzz import Target, fuzz_api, load_schema, prepare_target
from tests.server.conftest import Provisioners
from tests.server.processes import make_ca_folder, serving

EXAMPLES = 6
#: Operations the credentials must take past the 401s in every run.
DEEP = {
    "POST /sign",
    "POST /renew",
    "GET /certificates",
    "GET /requests",
    "POST /requests",
    "POST /revoke",
    "GET /certificates/{serial}",
}


@pytest.fixture(scope="module")
def target(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    module_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("fuzz")
    ca = make_ca_folder(ca_material, provisioners, module_database_url, folder / "ca")
    with serving(ca, folder / "serve.log") as server:
        yield prepare_target(server, ca, provisioners)


def test_every_operation_is_fuzzed_with_its_bodies(target: Target) -> None:
    schema = load_schema(target, examples=1)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 33
    attest = next(o for o in operations if o.path == "/provisioners/{name}/attest")
    assert attest.body, "the attest body must resolve (it pointed at #/$defs/Attestation)"


def test_the_api_survives_a_stateful_fuzzing_run(target: Target) -> None:
    result = fuzz_api(target, examples=EXAMPLES)
    assert not result.failures, "\n\n".join(f"{k}\n{v}" for k, v in result.failures.items())
    assert result.cases > 33 * EXAMPLES // 2
    reached = {label for label, codes in result.statuses.items() if min(codes) < 300}
    assert DEEP <= reached, f"never answered 2xx: {sorted(DEEP - reached)}"
    log = (target.server.log).read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
