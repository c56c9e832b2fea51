"""The gateway's counters, served on its metrics listener in the Prometheus text format."""

from __future__ import annotations

from collections import Counter


class Metrics:
    """Counters, rendered in the Prometheus text format (version 0.0.4)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.requests: Counter[int] = Counter()
        self.reloads: Counter[str] = Counter()
        #: Leaf checks answered by the revocation feed's set (no OCSP/CRL asked).
        self.feed_decided = 0

    def render(self) -> str:
        lines = [
            "# HELP ostiary_gateway_connections_accepted_total Client connections let through.",
            "# TYPE ostiary_gateway_connections_accepted_total counter",
            f"ostiary_gateway_connections_accepted_total {self.accepted}",
            "# HELP ostiary_gateway_connections_refused_total Connections refused, by reason.",
            "# TYPE ostiary_gateway_connections_refused_total counter",
        ]
        lines += [
            f'ostiary_gateway_connections_refused_total{{reason="{r}"}} {n}'
            for r, n in sorted(self.refused.items())
        ]
        lines += [
            "# HELP ostiary_gateway_requests_total Proxied HTTP requests, by status.",
            "# TYPE ostiary_gateway_requests_total counter",
        ]
        lines += [
            f'ostiary_gateway_requests_total{{status="{s}"}} {n}'
            for s, n in sorted(self.requests.items())
        ]
        lines += [
            "# HELP ostiary_gateway_reloads_total Reloads of certificate, key and trust.",
            "# TYPE ostiary_gateway_reloads_total counter",
        ]
        lines += [
            f'ostiary_gateway_reloads_total{{result="{r}"}} {n}'
            for r, n in sorted(self.reloads.items())
        ]
        lines += [
            "# HELP ostiary_gateway_feed_decisions_total Leaf revocation checks answered by "
            "the CA's revocation feed.",
            "# TYPE ostiary_gateway_feed_decisions_total counter",
            f"ostiary_gateway_feed_decisions_total {self.feed_decided}",
        ]
        return "\n".join(lines) + "\n"
