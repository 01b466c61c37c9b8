"""`salon-sessions api`: serve the onboarding API and page with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

from salon_sessions.core.logs import configure_logging
from salon_sessions.core.settings import ApiSettings, load_settings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("api", help="run the onboarding API and page",
                       description="Configured by SALON_* environment variables: "
                       "SALON_DATABASE_URL, SALON_REDIS_URL, SALON_ADMIN_TOKEN, "
                       "SALON_TOKEN_SECRET, SALON_NAMESPACE, SALON_KUBECONFIG, ... "
                       "(see docs/API.md)")
    p.add_argument("--host", help="listen address (default SALON_HOST or 0.0.0.0)")
    p.add_argument("--port", type=int, help="listen port (default SALON_PORT or 8080)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(ApiSettings, "api")
    if settings is None:
        return 2
    missing = [name for name, value in (("SALON_ADMIN_TOKEN", settings.admin_token),
                                        ("SALON_TOKEN_SECRET", settings.token_secret))
               if value is None]
    if missing:
        print(f"salon-sessions api: {' and '.join(missing)} must be set (from a Secret)",
              file=sys.stderr)
        return 2
    secret = settings.token_secret
    if secret is not None and len(secret.get_secret_value()) < 32:
        print("salon-sessions api: SALON_TOKEN_SECRET must be at least 32 characters",
              file=sys.stderr)
        return 2
    configure_logging("api", level=settings.log_level, json_lines=settings.log_json)
    import uvicorn

    from salon_sessions.api import logfilters
    from salon_sessions.api.app import create_app

    logfilters.install()
    app = create_app(settings)
    host = args.host or settings.host
    port = args.port or settings.port
    log.info("API listening on %s:%d (namespace %s)", host, port, settings.namespace)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False,
                ws="websockets-sansio", ws_per_message_deflate=False, proxy_headers=True,
                server_header=False, timeout_graceful_shutdown=10)
    return 0
