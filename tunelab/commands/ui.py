"""`tunelab ui`: the web app over a runs directory (tunelab/ui), served by uvicorn.

Binds 127.0.0.1 unless told otherwise, and refuses another host without --auth: the page
starts processes and reads files, so it is never open to a network by accident."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError
from tunelab.ui.app import Services, create_app
from tunelab.ui.guard import Auth

LOCAL = ("127.0.0.1", "localhost", "::1")


def _preview(cfg: Any, n: int) -> str:
    from tunelab.commands.inspect_data import inspect

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        inspect(cfg, max(1, min(n, 20)), colour=False)
    return out.getvalue()


def _compare(run_dirs: list[Path], out: Path) -> Path:
    from tunelab.report import report

    return report(run_dirs, out, log=lambda _: None)


def _generator(target: str, adapters: list[str], use: str | None) -> tuple[Any, Any]:
    from tunelab.commands.generate import load_generator

    return load_generator(target, adapters, use)


def _explain(run_dir: Path, text: str) -> list[dict[str, Any]]:
    from tunelab.commands.explain import explain

    return explain(run_dir, [text], steps=20, colour=False, log=lambda _: None)["explanations"]


def services() -> Services:
    return Services(preview=_preview, compare=_compare, generator=_generator, explain=_explain)


def build(runs_dir: Path, auth: str | None = None, max_upload_mb: float = 50.0) -> Any:
    """The app over `runs_dir` with every service; `auth` as --auth takes it."""
    if max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb {max_upload_mb}: give a positive size")
    return create_app(Path(runs_dir), services(), Auth.parse(auth) if auth else None,
                      int(max_upload_mb * 2**20))


def ui(host: str = "127.0.0.1", port: int = 7860, runs_dir: Path = Path("runs"),
       auth: str | None = None, max_upload_mb: float = 50.0) -> None:
    """Serve the UI until Ctrl-C; runs it started keep training after it stops."""
    import uvicorn

    auth = auth or os.environ.get("TUNELAB_UI_AUTH") or None
    if host not in LOCAL and auth is None:
        raise ConfigError(f"--host {host}: the UI starts training and reads files; exposing it "
                          "needs --auth user:password (or a token), or bind 127.0.0.1")
    app = build(runs_dir, auth, max_upload_mb)
    print(f"tunelab ui: http://{host}:{port}/ over {Path(runs_dir).resolve()} (Ctrl-C stops "
          "the UI; runs keep training)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
