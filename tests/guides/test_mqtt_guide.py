"""examples/mqtt/README.md as written, against a real Mosquitto it starts on a free port, with
a real `ca serve` and crl-watch: the broker (key 640, group mosquitto, read by the broker after
it drops root), the ACL, the device, and an opener whose "open" reaches the device."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.conftest import IN_CI, require_tool
from tests.guides.conftest import ROOT
from tests.guides.markdown import Guide, parse_guide
from tests.guides.runner import GuideRun

MQTT_GUIDE = ROOT / "examples" / "mqtt" / "README.md"


def test_the_mqtt_bridge_passes_a_message_from_the_guide_alone(
    run: Callable[[Guide], GuideRun],
) -> None:
    for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub", "curl", "openssl"):
        require_tool(tool)
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the MQTT guide is run as root, as it says")
        pytest.skip("the MQTT guide is run as root, as it says")
    result = run(parse_guide(MQTT_GUIDE))
    assert result.returncode == 0, result.explain()
    device_log = (result.folder / "device.log").read_text()
    assert "command: open" in device_log
    key = result.folder / "etc" / "mosquitto" / "ostiary" / "broker.key"
    assert key.stat().st_mode & 0o777 == 0o640
