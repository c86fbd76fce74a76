"""netsec serving: a FastAPI service for the MLflow Production model (``serving.app:app``)."""
