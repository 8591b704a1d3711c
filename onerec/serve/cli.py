"""``onerec serve``: the HTTP recommendation service over a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve_command(
    run: Annotated[Path, typer.Option("--run", help="Run directory with model.safetensors and run.json.")],
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1: loopback only).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file; its \\[serve] table is read.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. serve.max_batch_size=16.")] = None,
) -> None:
    """Serve POST /v1/recommend, /healthz, /readyz, /metrics and /admin/reload for a trained run."""
    from onerec.config import load_section
    from onerec.serve.app import serve
    from onerec.serve.engine import ServeConfig

    overrides = list(set_ or [])
    if host is not None:
        overrides.append(f'serve.host="{host}"')
    if port is not None:
        overrides.append(f"serve.port={port}")
    serve(run, load_section(ServeConfig, "serve", config, overrides))
