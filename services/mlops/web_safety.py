"""What every HTTP answer of the project's servers carries, and what no page shows.

* :data:`FRAME_HEADERS`: no page may be framed by another site (clickjacking): the
  dashboard and the serving API send both the modern header and the old one.
* :func:`redact_credentials`: a URI with credentials in it (``http://user:pass@host``, as
  ``MLFLOW_TRACKING_URI`` or ``DATABASE_URL`` may be) loses them wherever it would be
  shown: ``http://***@host``.
"""

from __future__ import annotations

import re
from typing import Any

FRAME_HEADERS: dict[str, str] = {
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}


def forbid_framing(headers: Any) -> None:
    """Set :data:`FRAME_HEADERS` on ``headers`` (a mutable mapping of an answer's headers);
    an answer's own Content-Security-Policy is kept, its ``frame-ancestors`` made 'none'."""
    policy = headers.get("Content-Security-Policy")
    headers["X-Frame-Options"] = FRAME_HEADERS["X-Frame-Options"]
    if not policy:
        headers["Content-Security-Policy"] = FRAME_HEADERS["Content-Security-Policy"]
        return
    kept = [
        d.strip()
        for d in policy.split(";")
        if d.strip() and not d.strip().lower().startswith("frame-ancestors")
    ]
    kept.append(FRAME_HEADERS["Content-Security-Policy"])
    headers["Content-Security-Policy"] = "; ".join(kept)


# scheme://user:password@ (the user part may be empty; neither part holds / \ @ or
# spaces). The slashes may be JSON's \u002f: Plotly's encoder (Dash's answers) writes them so.
_CREDENTIALS = re.compile(
    r"(?i)\b([a-z][a-z0-9+.-]*:(?://|\\u002f\\u002f))[^/\\\s@:\"'<>]*:[^/\\\s@\"'<>]*@"
)


def redact_credentials(text: str) -> str:
    """``text`` with every ``scheme://user:password@`` turned into ``scheme://***@`` (also
    inside JSON that escapes slashes as ``\\u002f``)."""
    return _CREDENTIALS.sub(r"\1***@", text)
