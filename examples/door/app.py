"""The door opener: a page with a PIN field and an "open" button, meant to sit behind
``ostiary gateway run`` (which lets only certificate holders through and says who they are in
``X-Client-Subject``). Standard library only.

    DOOR_PIN=4711 DOOR_COMMAND='echo opening' python app.py --port 8080

It listens on 127.0.0.1 only: the gateway is its one client. A request without the gateway's
identity header is refused. The PIN is a second factor on top of the certificate (compared in
constant time); ``DOOR_COMMAND`` is what actually opens the door (a relay, an HTTP call to the
home automation, ...): "door opened" only when it exits 0, else 502 and "the door did not open".
"""

from __future__ import annotations

import argparse
import hmac
import html
import os
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

PAGE = """<!doctype html><html><head><meta name="viewport" content="width=device-width">
<title>Door</title></head><body style="font-family:sans-serif;text-align:center">
<p>Hello {who}</p><p>{message}</p>
<form method="post" action="/open"><input name="pin" type="password" inputmode="numeric"
autocomplete="off" placeholder="PIN"> <button style="font-size:2em">Open</button></form>
</body></html>"""


class Door(BaseHTTPRequestHandler):
    server_version = "door"

    def _who(self) -> str | None:
        return self.headers.get("X-Client-Subject")

    def _page(self, status: int, message: str) -> None:
        body = PAGE.format(
            who=html.escape(self._who() or "stranger"), message=html.escape(message)
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self._who() is None:
            self._page(403, "only through the gateway")
            return
        self._page(200, "")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(min(length, 4096)).decode("utf-8", "replace"))
        if self._who() is None or self.path != "/open":
            self._page(403, "only through the gateway")
            return
        pin = (form.get("pin") or [""])[0].encode()
        expected = os.environ.get("DOOR_PIN", "").encode()
        if not expected or not hmac.compare_digest(pin, expected):
            self._page(403, "wrong PIN")
            return
        command = os.environ.get("DOOR_COMMAND")
        if command:
            try:
                done = subprocess.run(["/bin/sh", "-c", command], check=False, timeout=30)
            except subprocess.TimeoutExpired:
                self._page(502, "the door did not open: DOOR_COMMAND took over 30 s")
                return
            if done.returncode != 0:
                self._page(502, f"the door did not open: DOOR_COMMAND exited {done.returncode}")
                return
        self._page(200, "door opened")

    def log_message(self, format: str, *args: object) -> None:
        pass  # the gateway logs every request with the client's identity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Door).serve_forever()


if __name__ == "__main__":
    main()
