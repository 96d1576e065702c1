"""`vigie serve`: MLflow's own scoring server (`mlflow models serve --env-manager local`) on a registered model.

The model's signature makes the server reject malformed requests with a 400 and a message (no stack trace);
the model's own input checks (empty text, oversized text, wrong types) answer 400 the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from training import tracking


def serve_command(model_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "--host", host, "--port", str(port), "--workers", str(workers)]


def serve_env() -> dict[str, str]:
    env = dict(os.environ)
    # MLflow starts `uvicorn` by name: the environment's own scripts must come first on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> int:
    tracking.setup()
    print(f"serving {model_uri} on http://{host}:{port}/invocations (store {tracking.tracking_uri()})", file=sys.stderr)
    return subprocess.call(serve_command(model_uri, host, port, workers), env=serve_env())
