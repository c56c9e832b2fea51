"""examples/door/README.md as a new user follows it, on one machine: the CA, the door's and
the phone's certificates, the app and the gateway; then the phone's certificate opens the door
and a client without one does not get in."""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509

from tests.conftest import require_tool
from tests.guides.conftest import ROOT
from tests.guides.markdown import Guide, parse_guide
from tests.guides.runner import GuideRun

DOOR_GUIDE = ROOT / "examples" / "door" / "README.md"


def test_the_door_opens_from_the_guide_alone(run: Callable[[Guide], GuideRun]) -> None:
    require_tool("curl")
    require_tool("openssl")
    result = run(parse_guide(DOOR_GUIDE))
    assert result.returncode == 0, result.explain()
    assert ">>> guide finished" in result.output
    assert (result.folder / "door.log").read_text().strip(), "DOOR_COMMAND ran"
    phone = x509.load_pem_x509_certificate((result.folder / "phone.crt").read_bytes())
    lifetime = phone.not_valid_after_utc - phone.not_valid_before_utc
    assert lifetime.days >= 89, "a .p12 phone gets the 90 days the guide promises"
    assert (result.folder / "phone.p12").stat().st_mode & 0o777 == 0o600
