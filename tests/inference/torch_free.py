"""Running code as the serve and batch-infer images run it: in a subprocess where torch,
Ludwig and TA-Lib (and for serving pyarrow) cannot be imported (the images install none
of them: pyproject extras ``serve`` and ``infer``). Shared by tests/inference and
tests/serving.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable

SERVE_ABSENT = ("torch", "ludwig", "talib", "pyarrow")
INFER_ABSENT = ("torch", "ludwig", "talib")


def blocked(names: Iterable[str] = INFER_ABSENT) -> str:
    """Code that makes importing ``names`` fail (an entry of None in sys.modules raises
    ImportError), to put before the code a test runs."""
    return f"import sys\nfor _name in {tuple(names)!r}:\n    sys.modules[_name] = None\n"


def run(code: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with ``env``, ``stdin`` on its input; never raises
    on its exit code (the test checks it)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


# The serving app on the records read from stdin (JSON), once the champion is loaded:
# the code that follows runs inside ``with ... as client`` (indented four spaces).
SERVE_WHEN_READY = (
    "import json, time\n"
    "from fastapi.testclient import TestClient\n"
    "from mlops.serving.app import create_app\n"
    "from mlops.settings import load_settings\n"
    "records = json.loads(sys.stdin.read())\n"
    "with TestClient(create_app(load_settings())) as client:\n"
    "    deadline = time.monotonic() + 300\n"
    "    while client.get('/readyz').status_code != 200:\n"
    "        assert time.monotonic() < deadline, client.get('/readyz').text\n"
    "        time.sleep(0.1)\n"
)
