"""Certificate lifetimes: the min/default/max claims and durations typed by people."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from ostiary.core.errors import BadRequest, LifetimeNotAllowed

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),
}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``1h30m``, ``2w``, ``1y`` (365 days) as a timedelta."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION.sub("", compact):
        raise BadRequest(f"not a duration: {text!r} (examples: 15m, 24h, 7d, 1h30m)")
    total = timedelta()
    try:
        for number, unit in _DURATION.findall(compact):
            total += float(number) * _UNITS[unit]
    except OverflowError:  # past timedelta's 999,999,999 days (found by fuzz/, jwk harness)
        raise BadRequest(f"a duration too long: {text[:40]!r}") from None
    if total <= timedelta():
        raise BadRequest(f"a duration must be positive: {text!r}")
    return total


def format_duration(value: timedelta) -> str:
    """The shortest exact ``d/h/m/s`` form of a duration: ``7d``, ``1h30m``."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class Lifetime:
    """How long certificates may live: the step-ca style min/default/max claims."""

    minimum: timedelta = timedelta(minutes=5)
    default: timedelta = timedelta(hours=24)
    maximum: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        if not self.minimum <= self.default <= self.maximum:
            raise BadRequest(
                "lifetime claims must satisfy minimum <= default <= maximum "
                f"({format_duration(self.minimum)}, {format_duration(self.default)}, "
                f"{format_duration(self.maximum)})"
            )

    def check(self, requested: timedelta) -> timedelta:
        """``requested`` if it is within [minimum, maximum], else :class:`LifetimeNotAllowed`."""
        if requested > self.maximum:
            raise LifetimeNotAllowed(
                f"requested lifetime {format_duration(requested)} exceeds the maximum of "
                f"{format_duration(self.maximum)}",
                requested=requested.total_seconds(),
                maximum=self.maximum.total_seconds(),
            )
        if requested < self.minimum:
            raise LifetimeNotAllowed(
                f"requested lifetime {format_duration(requested)} is below the minimum of "
                f"{format_duration(self.minimum)}",
                requested=requested.total_seconds(),
                minimum=self.minimum.total_seconds(),
            )
        return requested


def resolve_not_after(
    now: datetime, lifetime: Lifetime, *, requested: timedelta | datetime | None
) -> datetime:
    """The not_after for a request made at ``now``: the requested end or the default."""
    if requested is None:
        return now + lifetime.default
    if isinstance(requested, datetime):
        return now + lifetime.check(requested - now)
    return now + lifetime.check(requested)
