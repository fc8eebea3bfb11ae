"""tunelab serve: load the targets once, then answer the OpenAI API over HTTP until Ctrl-C."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys

from tunelab.errors import ConfigError


def serve(targets: list[str], adapters: list[str], host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, admin_key: str | None = None, *, max_batch: int = 32,
          max_queue: int = 256, max_concurrent: int = 64, batch_window_ms: float = 5.0,
          max_body_bytes: int = 1 << 20) -> None:
    """Serve run directories, adapter directories or model names (several adapters of one
    base share it), plus `adapters` given as NAME=PATH. Keys default to $TUNELAB_API_KEY and
    $TUNELAB_ADMIN_KEY; without an admin key adapters cannot be changed at run time."""
    import uvicorn

    from tunelab.serve.app import create_app, engines
    from tunelab.serve.guard import Limits
    from tunelab.serve.targets import load_targets

    _check(port, max_batch=max_batch, max_queue=max_queue, max_concurrent=max_concurrent,
           max_body_bytes=max_body_bytes, batch_window_ms=batch_window_ms)
    api_key = api_key or os.environ.get("TUNELAB_API_KEY") or None
    admin_key = admin_key or os.environ.get("TUNELAB_ADMIN_KEY") or None
    served = load_targets(targets, adapters, max_batch=max_batch, max_queue=max_queue,
                          batch_window_ms=batch_window_ms)
    app = create_app(served, api_key, admin_key, Limits(max_concurrent, max_body_bytes))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {', '.join(served.ids())}\n  at http://{shown}:{port}/v1 "
          f"(API key {'required' if api_key else 'off'}, adapter admin "
          f"{'on' if admin_key else 'off'})", flush=True)
    if api_key is None and not _loopback(host):
        print(f"warning: {host} is reachable from other machines and no --api-key is set; "
              "anyone who can connect can use the models", file=sys.stderr, flush=True)
    running = engines(served)
    for engine in running:
        engine.start()
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                      timeout_graceful_shutdown=5)).run()
    finally:
        for engine in running:
            engine.shutdown()


def _check(port: int, **positive: float) -> None:
    """Refuse option values that cannot work, before any model loads."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: give a port from 0 to 65535")
    for name, value in positive.items():
        if value < (0 if name == "batch_window_ms" else 1):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {value}: give a number of at least "
                              f"{0 if name == 'batch_window_ms' else 1}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume it can be reached from outside
        return False
