"""`zsad` command line. The app and its command table are in ``app.py``; this re-export
is the console script's entry point (``zsad = "zsad.cli:app"``)."""
from .app import app

__all__ = ["app"]
