"""The dashboard's defaults, importable without the web stack (the CLI builds its parser
from them before Starlette or uvicorn are needed)."""

DEFAULT_PORT = 8050
