"""Routers by concern: predict, model/health/metrics, ui, train."""
