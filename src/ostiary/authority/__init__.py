"""The Authority: authorize -> issue -> record -> audit; renew, revoke, CRLs."""

from ostiary.authority.authority import Authority

__all__ = ["Authority"]
