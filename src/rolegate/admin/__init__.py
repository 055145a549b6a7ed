"""rolegate.admin: the admin API (``/.rolegate/api/v1/``) and web UI (``/.rolegate/admin/``).

``add_admin_routes(reserved_app, holder)`` mounts both on the ``/.rolegate`` sub-application.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["add_admin_routes"]


def add_admin_routes(reserved: web.Application, holder: Any) -> None:
    # Lazy: at the top, importing any rolegate.admin module (admin.state for ``rolegate test``, admin.wording for
    # server/refused.py) would load the whole API and UI too: measured ~300 ms and ~270 modules more.
    from rolegate.admin.api import add_api_routes
    from rolegate.admin.ui import add_ui_routes

    add_api_routes(reserved, holder)
    add_ui_routes(reserved, holder)
