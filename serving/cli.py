"""``netsec serve``: a subcommand the serving package adds to the ``netsec`` CLI (no Airflow import).

It is registered as the entry point ``serve`` of group ``netsec.commands`` (``pyproject.toml``);
``netsec_tasks.cli.plugin_commands`` loads it, so the library never imports the service.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``netsec serve [--host H] [--port P] [--workers N]`` through ``add(name, **kw)``."""
    sv = add("serve", help="start the FastAPI serving service")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--workers", type=int, default=1)
    sv.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    serve(host=args.host, port=args.port, workers=args.workers)
    return 0


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the service with uvicorn. Each worker loads its own copy of the model.

    ``host`` is loopback by default: ``netsec serve --host 0.0.0.0`` (or ``make serve
    HOST=0.0.0.0``) exposes the service to the network, where /predict is open unless
    NETSEC_SERVING_API_KEY is set."""
    import uvicorn

    from serving.settings import Settings

    # The app checks this too; here a refused set-up is the CLI's exit 2 with one line, before
    # uvicorn prints an import traceback.
    Settings().check_train_settings()
    uvicorn.run(
        "serving.app:app",
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        access_log=False,
        log_level="info",
    )
