"""A Flask app: its dependencies come from poetry.lock (dev dependencies are not installed)."""

import importlib.util
import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    # pytest is a dev dependency: the build must leave it out.
    dev_installed = importlib.util.find_spec("pytest") is not None
    return (
        f"<h1>Flask with Poetry</h1><p>dyno {os.environ.get('DYNO', '?')}, "
        f"dev dependencies installed: {dev_installed}</p>"
    )
