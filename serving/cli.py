"""``netsec serve``: the entry point the netsec CLI calls (no Airflow import here)."""

from __future__ import annotations


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the service with uvicorn. Each worker loads its own copy of the model."""
    import uvicorn

    uvicorn.run("serving.app:app", host=host, port=port, workers=workers,
                proxy_headers=True, access_log=False, log_level="info")
