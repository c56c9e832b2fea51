"""sshd's ``AuthorizedPrincipalsCommand``, with the standard library only.

sshd runs it at every certificate login (twice: to test the key, then to check the
signature), so it must start fast: the full ``ostiary`` command imports Typer, httpx,
cryptography and the SDK before it can ask anything (about 1 s on an idle machine, seconds
on a busy one); this module imports ``ssl``, ``json`` and ``urllib`` and nothing of ours
(``python -m ostiary.cli.ssh_principals``, what ``ostiary ssh config server`` prints). The
answer comes over HTTPS verified against the CA's root file, from
``GET /ssh/status/user/SERIAL``.

It prints USER when the certificate is valid now and names USER among its principals, and
nothing otherwise (revoked, expired, unknown, another principal, the CA unreachable), so sshd
refuses; the reason goes to stderr, which sshd logs.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.error
import urllib.request

#: The longest answer we read from the CA.
_MAX_ANSWER = 64 * 1024


def principal_for(
    user: str, serial: str, *, ca_url: str, root_file: str, timeout: float
) -> tuple[str | None, str]:
    """(the line to print, or None; why) for a login as ``user`` with certificate ``serial``."""
    if not serial.isdigit() or len(serial) > 20:
        return None, f"the serial {serial[:32]!r} is not a decimal number"
    try:
        context = ssl.create_default_context(cafile=root_file)
    except (OSError, ssl.SSLError) as exc:
        return None, f"cannot read the CA root {root_file}: {exc}"
    url = f"{ca_url.rstrip('/')}/ssh/status/user/{serial}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            status = json.loads(answer.read(_MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        return None, f"the CA answered {exc.code} for certificate {serial}"
    except (OSError, ValueError) as exc:
        return None, f"the CA at {ca_url} could not be asked: {exc}"
    if not isinstance(status, dict) or status.get("status") != "valid":
        shown = status.get("status") if isinstance(status, dict) else "unreadable"
        return None, f"certificate {serial} is {shown}"
    principals = status.get("principals")
    if not isinstance(principals, list) or user not in principals:
        return None, f"certificate {serial} does not name {user!r}"
    return user, f"certificate {serial} is valid for {user!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ostiary.cli.ssh_principals",
        description="sshd AuthorizedPrincipalsCommand: print USER if the CA says the "
        "certificate SERIAL is valid now and names USER.",
    )
    parser.add_argument("--ca-url", required=True, help="the CA's https:// URL")
    parser.add_argument("--root", required=True, help="the CA's root certificate (PEM)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("user", help="sshd's %%u")
    parser.add_argument("serial", help="sshd's %%s")
    options = parser.parse_args(argv)
    line, reason = principal_for(
        options.user,
        options.serial,
        ca_url=options.ca_url,
        root_file=options.root,
        timeout=options.timeout,
    )
    if line is None:
        print(f"ostiary: {reason}", file=sys.stderr)
    else:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
