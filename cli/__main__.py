"""`python -m cli ...` runs the `streamrec` command."""

from cli.main import app

app(prog_name="streamrec")
