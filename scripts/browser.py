"""Headless Chromium driven over the DevTools protocol on a pipe: load a page, see what a person sees.

No browser-automation package: Chromium's ``--remote-debugging-pipe`` reads protocol messages
(JSON, each ended by a NUL byte) on file descriptor 3 and writes its answers and events on 4.
:func:`render` loads a file, records every console message, uncaught exception and network request
the page makes, evaluates expressions in it, and saves a screenshot. Tests skip, saying why, where
Debian's ``chromium`` is not installed (``.ci/run`` installs it). As a script it renders one page and
fails on an error or a request leaving the file (``make synthetic-page`` takes the committed
screenshot with it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe")


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageLoad:
    console: list[dict] = field(default_factory=list)  # {"level", "text"}
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    values: dict = field(default_factory=dict)  # expression -> value

    def errors(self) -> list[str]:
        return [m["text"] for m in self.console if m["level"] in ("error", "assert")] + self.exceptions


class _Pipe:
    def __init__(self, process: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.process, self.write_fd, self.read_fd = process, write_fd, read_fd
        self.buffer, self.next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for answer in self._read():
                if answer.get("id") == self.next_id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer.get("result", {})
                self.events.append(answer)
        raise TimeoutError(f"no answer to {method} in {timeout} s")

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events += list(self._read())
        raise TimeoutError(f"no {method} in {timeout} s")

    def _read(self):
        while b"\0" not in self.buffer:
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit {self.process.poll()})")
            self.buffer += chunk
        *messages, self.buffer = self.buffer.split(b"\0")
        for message in messages:
            yield json.loads(message)


def render(page: Path, screenshot: Path | None = None, expressions: tuple[str, ...] = (),
           size: tuple[int, int] = (1400, 1000), settle: float = 0.5) -> PageLoad:
    """Load ``page`` (a file) in headless Chromium; return what it logged, threw and requested, and the
    value of each of ``expressions`` evaluated in it afterwards; save a ``size`` screenshot."""
    executable = chromium()
    if executable is None:
        raise FileNotFoundError("chromium is not installed")
    to_browser_read, to_browser_write = os.pipe()
    from_browser_read, from_browser_write = os.pipe()
    profile = tempfile.mkdtemp(prefix="vssbench-chromium-")

    def descriptors() -> None:  # the browser's end of each pipe at 3 (reads) and 4 (writes)
        high_in, high_out = os.dup(to_browser_read), os.dup(from_browser_write)
        os.dup2(high_in, 3)
        os.dup2(high_out, 4)

    process = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               preexec_fn=descriptors, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    os.close(to_browser_read)
    os.close(from_browser_write)
    pipe = _Pipe(process, to_browser_write, from_browser_read)
    load = PageLoad()
    try:
        targets = pipe.send("Target.getTargets")["targetInfos"]
        target = next(t["targetId"] for t in targets if t["type"] == "page")
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride", {"width": size[0], "height": size[1],
                                                         "deviceScaleFactor": 1, "mobile": False}, session=session)
        pipe.events.clear()
        pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        pipe.wait_for("Page.loadEventFired", timeout=60)
        time.sleep(settle)
        for expression in expressions:
            result = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                               session=session)
            if "exceptionDetails" in result:
                raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
            load.values[expression] = result["result"].get("value")
        if screenshot is not None:
            data = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(data))
        pipe.send("Runtime.evaluate", {"expression": "1"}, session=session)  # flush the events before reading
        for event in pipe.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
                load.console.append({"level": params.get("type"), "text": text})
            elif method == "Log.entryAdded":
                entry = params["entry"]
                load.console.append({"level": entry.get("level"), "text": entry.get("text", "")})
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                load.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif method == "Network.requestWillBeSent":
                load.requests.append(params["request"]["url"])
    finally:
        try:
            pipe.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        process.kill()
        process.wait()
        os.close(to_browser_write)
        os.close(from_browser_read)
        shutil.rmtree(profile, ignore_errors=True)
    return load


def main(argv: list[str] | None = None) -> int:
    """``python scripts/browser.py PAGE [--screenshot PNG]``: render PAGE, print what it logged and
    requested outside itself, save the screenshot; exit 1 on an error or a request leaving the file."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--size", default="1400x1000", help="viewport WIDTHxHEIGHT (default: 1400x1000)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    load = render(args.page, args.screenshot, size=(width, height))
    outside = outside_requests(load.requests, args.page)
    for text in load.errors():
        print(f"error: {text}")
    for url in outside:
        print(f"request outside the file: {url}")
    print(f"{args.page}: {len(load.errors())} errors, {len(outside)} requests outside the file"
          + (f"; screenshot {args.screenshot}" if args.screenshot else ""))
    return 1 if load.errors() or outside else 0


def outside_requests(requests: list[str], page: Path) -> list[str]:
    """The requests that left the page's own file: anything but the file itself and data: URIs."""
    return [url for url in requests if url != page.resolve().as_uri() and not url.startswith("data:")]


if __name__ == "__main__":
    raise SystemExit(main())
