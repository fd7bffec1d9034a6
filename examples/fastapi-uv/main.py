"""A FastAPI app: its dependencies come from uv.lock."""

import os

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

app = FastAPI()


@app.get("/", response_class=HTMLResponse)
def index() -> str:
    return f"<h1>FastAPI with uv</h1><p>dyno {os.environ.get('DYNO', '?')}</p>"


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
