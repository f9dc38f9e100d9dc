"""A browser for the harness's sign-in page, so the interactive (auth code + PKCE) flow runs headless.

As a ``$BROWSER`` command: ``python -m harness.browser URL`` returns at once and leaves a detached child
that does what a person in a browser would: GET the authorize URL (trusting the harness CA), fill the
username form if the page shows one (``HARNESS_BROWSER_USER``), and POST the form_post answer (``code``,
``state``, ``client_info``) to the loopback redirect URI. It must return at once: CPython's webbrowser
waits for a ``$BROWSER`` command to exit, and MSAL reads the loopback POST only after that.

``$BROWSER`` must name one executable (webbrowser does not split arguments), so:

* ``python -m harness.browser --install DIR`` writes ``DIR/harness-browser`` and prints its path:
  ``BROWSER=$(python -m harness.browser --install .state)``;
* in-process, ``harness.browser.register()`` makes it webbrowser's preferred browser.

The CA bundle comes from ``HARNESS_CA_BUNDLE``, else ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE`` or
``OUTBOX_CA_BUNDLE`` (what ``harness_env`` and the harness's settings set).
"""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
import webbrowser
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

CA_VARIABLES = ("HARNESS_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "OUTBOX_CA_BUNDLE")
USER_VARIABLE = "HARNESS_BROWSER_USER"
MAX_PAGES = 5
TIMEOUT_S = 30.0


class BrowserError(RuntimeError):
    """The page was not a sign-in step this browser knows (e.g. Entra's error page)."""


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", ""), method=a.get("method", "GET").upper()))
        elif tag == "input" and self.forms and a.get("name"):
            form = self.forms[-1]
            form.inputs.append(a["name"])
            if a.get("type", "text") == "hidden":
                form.fields[a["name"]] = a.get("value", "")

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def _parse(page: str) -> _Forms:
    parser = _Forms()
    parser.feed(page)
    return parser


def _ca_file() -> str | None:
    return next((os.environ[v] for v in CA_VARIABLES if os.environ.get(v)), None)


def _loopback(url: str) -> str:
    """MSAL listens on 127.0.0.1 for ``http://localhost:{port}``; go there, as browsers resolve it."""
    parts = urlsplit(url)
    if parts.hostname == "localhost":
        netloc = "127.0.0.1" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def follow(url: str, *, user: str | None = None, ca_file: str | None = None) -> httpx.Response:
    """Sign in at ``url`` like a person would; returns the redirect URI's answer to the form_post."""
    context = ssl.create_default_context(cafile=ca_file or _ca_file())
    with httpx.Client(verify=context, timeout=TIMEOUT_S, follow_redirects=True) as http:
        response = http.get(url)
        for _ in range(MAX_PAGES):
            parsed = _parse(response.text)
            form = parsed.forms[0] if parsed.forms else None
            if form is None:
                raise BrowserError(f"{response.status_code} page without a form: {' '.join(parsed.text)[:500]}")
            action = urljoin(str(response.url), form.action)
            if "username" in form.inputs:
                if not user:
                    raise BrowserError(f"the sign-in page asks for a username: set {USER_VARIABLE}")
                response = http.post(action, data={**form.fields, "username": user})
                continue
            if form.method == "POST" and urlsplit(action).netloc != urlsplit(str(response.url)).netloc:
                # The form_post answer: deliver it to the app's redirect URI.
                return http.post(_loopback(action), data=form.fields)
            raise BrowserError(f"unexpected form on the page: {form}")
    raise BrowserError(f"no answer for the redirect URI after {MAX_PAGES} pages")


def open_detached(url: str) -> None:
    """Follow ``url`` in a child process of its own session and return at once."""
    subprocess.Popen(
        [sys.executable, "-m", "harness.browser", "--follow", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


class HarnessBrowser(webbrowser.BaseBrowser):
    """webbrowser's controller for this browser (``register()``)."""

    def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
        open_detached(url)
        return True


def register(name: str = "harness") -> None:
    """Make this the preferred browser of the current process's ``webbrowser`` module."""
    webbrowser.register(name, None, HarnessBrowser(name), preferred=True)


def install(directory: str | Path) -> Path:
    """Write an executable ``harness-browser`` for ``$BROWSER`` (webbrowser wants one executable)."""
    path = Path(directory).resolve() / "harness-browser"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m harness.browser "$@"\n', encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--install":
        print(install(args[1]))
        return 0
    if len(args) == 2 and args[0] == "--follow":
        try:
            response = follow(args[1], user=os.environ.get(USER_VARIABLE))
        except (BrowserError, httpx.HTTPError) as exc:
            print(f"harness.browser: {exc}", file=sys.stderr)
            return 1
        return 0 if response.status_code < 400 else 1
    if len(args) == 1 and not args[0].startswith("-"):
        open_detached(args[0])
        return 0
    print("usage: python -m harness.browser URL | --follow URL | --install DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
