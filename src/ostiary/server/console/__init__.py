"""The web console at ``/console``: officers' pages on the CA server's HTTPS listener.

Server-rendered HTML (Jinja2), no scripts. Officers sign in with their own client
certificate over mTLS (:mod:`.security`) or, when an ``oidc`` provisioner names
admins, with OpenID Connect (:mod:`.oidc_sign_in`); every form carries a CSRF token bound to that
certificate; every action goes through the Authority and is audited. See docs/console.md.
"""

from ostiary.server.console.oidc_sign_in import router as _oidc_router
from ostiary.server.console.routes import router

router.include_router(_oidc_router)

__all__ = ["router"]
