"""`python -m zsad` runs the command line."""
from zsad.cli import app

app(prog_name="zsad")
