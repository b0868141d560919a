"""A real headless Chromium driven through the DevTools protocol over a pipe (stdlib only).

`--remote-debugging-pipe` makes Chromium read commands from fd 3 and write replies and events
to fd 4, each a JSON message ended by a NUL byte; no websocket or driver package is needed.
"""

import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from typing import Any

import pytest

_HINT = "Debian `chromium` is missing: install it with `scripts/services.sh up chromium`"
_RECORD_VIOLATIONS = (
    "window.__violations = [];"
    "document.addEventListener('securitypolicyviolation',"
    " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
)


class Chromium:
    """One headless browser; `open(url)` loads a page and records every request it sends."""

    def __init__(self, profile: str, timeout: float = 30.0) -> None:
        executable = shutil.which("chromium")
        if executable is None:
            pytest.fail(_HINT)
        self.timeout = timeout
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # Move the child's ends to high numbers first so that dup2 onto 3 and 4 cannot clobber
        # one with the other, whatever numbers os.pipe() returned.
        high_read = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 100)
        high_write = fcntl.fcntl(replies_write, fcntl.F_DUPFD, 100)

        def onto_3_and_4() -> None:
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        self._stderr = open(os.path.join(profile + ".stderr"), "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            pass_fds=(3, 4),
            preexec_fn=onto_3_and_4,
        )
        for fd in (commands_read, replies_write, high_read, high_write):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, AssertionError):  # gone meanwhile: waited below
                self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)
        self._stderr.close()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._replies], [], [], max(left, 0))
            if not ready:
                raise AssertionError("Chromium did not answer in time")
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise AssertionError(f"Chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._commands, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, session: str) -> dict:
        """Return the first event `method` of `session`, waiting for it if need be."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            self.events.append(self._read_message(deadline))

    def drain(self, seconds: float) -> None:
        """Keep the events that arrive during `seconds` (late requests, say)."""
        deadline = time.monotonic() + seconds
        while True:
            left = max(deadline - time.monotonic(), 0)
            ready, _, _ = select.select([self._replies], [], [], left)
            if not ready:
                return
            self.events.append(self._read_message(time.monotonic() + self.timeout))

    def open(self, url: str) -> "Page":
        """Open `url` in a new tab with the network recorded from before the first request."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": _RECORD_VIOLATIONS}, session)
        self.send("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired", session)
        self.drain(0.5)
        return Page(self, session)


class Page:
    """A loaded tab: evaluate JavaScript in it, list the requests it sent."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def evaluate(self, expression: str) -> Any:
        """Return the JSON value of `expression` evaluated in the page."""
        reply = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True},
            self.session,
        )
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def requests(self) -> list[str]:
        """Return the URL of every request the page sent (Network.requestWillBeSent)."""
        return [
            event["params"]["request"]["url"]
            for event in self.browser.events
            if event.get("method") == "Network.requestWillBeSent"
            and event.get("sessionId") == self.session
        ]
