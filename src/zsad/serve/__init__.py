"""`zsad serve`: an HTTP service (FastAPI + uvicorn) with server-side batching and a web page."""
from .app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
