"""SCEP (RFC 8894): the wire layer between devices and the ``scep`` provisioner.

:mod:`.message` reads a pkiMessage, :mod:`.reply` writes the answers, :mod:`.responder`
serves the operations of ``/scep/NAME`` (routes in :mod:`ostiary.server.routes.scep` and the
plain-HTTP listener). See ``docs/mdm.md``.
"""

from ostiary.scep.responder import ScepAnswer, ScepResponder, decode_get_message, parse_query

__all__ = ["ScepAnswer", "ScepResponder", "decode_get_message", "parse_query"]
