"""Passwords out of text: the one function every URL or DSN goes through before it is printed or logged.

``postgresql://deploy:hunter2@db/x`` -> ``postgresql://deploy:***@db/x``; ``?password=hunter2`` ->
``?password=***``; libpq ``host=db password='a b'`` -> ``host=db password=***``. It works on a whole
message, so an error text from a library that echoes a URL is safe to show too.
"""

from __future__ import annotations

import re

_USERINFO_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#]*):[^\s@/?#]*@")
_SECRET_WORDS = (
    "password|passwd|pwd|sslpassword|secret|client_secret|token|access_token|refresh_token|api_key|apikey"
)
_KEY_VALUE_SECRET = re.compile(
    rf"(?i)(?<![\w-])(?P<key>{_SECRET_WORDS})(?P<eq>\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;#'\"]*)"
)


def redact(text: str) -> str:
    """``text`` with every URL password, password query parameter and libpq ``password=`` as ``***``."""
    text = _USERINFO_PASSWORD.sub(r"\g<head>:***@", text)
    return _KEY_VALUE_SECRET.sub(r"\g<key>\g<eq>***", text)
