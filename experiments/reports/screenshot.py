"""A page as a reader sees it: a headless Chromium screenshot of an HTML report.

    python -m experiments.reports.screenshot ttb-demo/index.html ttb-demo/screenshot.png

Needs the ``chromium`` executable (Debian/Ubuntu: ``apt install chromium``); :func:`find_chromium`
returns None without it, so callers and tests can skip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, NAMES) if path), None)


def screenshot(page, png, *, width: int = 1280, height: int = 4000, timeout: float = 120.0) -> Path:
    """Render ``page`` (an HTML file) at ``width`` x ``height`` pixels into ``png``."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no chromium executable on PATH (apt install chromium)")
    page, png = Path(page).resolve(), Path(png).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"no page at {page}")
    png.unlink(missing_ok=True)
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python -m experiments.reports.screenshot PAGE.html [OUT.png]", file=sys.stderr)
        return 2
    page = Path(argv[0])
    try:
        png = screenshot(page, argv[1] if len(argv) == 2 else page.with_name("screenshot.png"))
    except (RuntimeError, FileNotFoundError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
