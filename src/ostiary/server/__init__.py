"""The CA server: the ASGI app (:func:`create_app`) and one replica's listeners (:class:`CAServer`).

``problems`` is the one place where errors become HTTP responses (RFC 7807); routes are split
by area in ``routes/`` (``publish``: CA certificates, CRLs, OCSP; ``enroll``: sign, renew,
revoke; ``admin``: the certificate list).
"""

from ostiary.server.app import create_app
from ostiary.server.context import ServerContext
from ostiary.server.runner import CAServer

__all__ = ["CAServer", "ServerContext", "create_app"]
