"""`python -m zsad` runs the command line."""
from .cli import app

app(prog_name="zsad")
