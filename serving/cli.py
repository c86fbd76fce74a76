"""``netsec serve``: the entry point the netsec CLI calls (no Airflow import here)."""

from __future__ import annotations


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
