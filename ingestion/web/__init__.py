"""The operator page: a browser view of every provider, its cycles and errors, and the catalog.

:func:`install` serves it from the admin API at ``/``, behind a login with the admin token that
opens a cookie session (:class:`Sessions`).
"""

from ingestion.web.pages import install
from ingestion.web.session import (
    COOKIE,
    CSRF_HEADER,
    SAFE_METHODS,
    Session,
    Sessions,
    cross_site,
)

__all__ = ["COOKIE", "CSRF_HEADER", "SAFE_METHODS", "Session", "Sessions", "cross_site", "install"]
