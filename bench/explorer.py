"""How fast the explorer's map is made, sent and drawn.

    .venv/bin/python bench/explorer.py                      # 100,000 points x 128
    .venv/bin/python bench/explorer.py --rows 1000000 --dim 512

Prints: PCA of 100,000 rows at several dimensions (the numerical core alone); then, through
a real server on this machine, the map route's first answer (sample, PCA, packing) and a
cached one, with its size; then, in headless Chromium if it is installed, the page's time
from load to drawn, one full redraw of every point, and one hover hit-test.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chroma_algo_projection.pca import principal_components  # noqa: E402
from chroma_client import Client  # noqa: E402
from tests.conftest import Server  # noqa: E402


def timed(work, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")

    rng = np.random.default_rng(0)
    print("\nPCA of 100,000 rows (fitted on 25,000, all projected):")
    for dim in (64, 512, 2048):
        x = rng.standard_normal((100_000, dim), dtype=np.float32)
        seconds = timed(lambda x=x: principal_components(x), repeat=3)
        print(f"  d={dim:>5}: {seconds:6.2f} s  ({principal_components(x[:2000]).solver} solver)")
        del x

    with tempfile.TemporaryDirectory() as directory:
        server = Server(Path(directory) / "data", env={"CHROMA_SIMILARITY_BUILD": "lazy"})
        try:
            client = Client(server.url)
            centres = rng.normal(0, 4, (10, args.dim))
            which = rng.integers(0, 10, args.rows)
            x = (centres[which] + rng.standard_normal((args.rows, args.dim))).astype(np.float32)
            client.space("bench").add(x, dataset=[f"d{i % 3}" for i in range(args.rows)])
            url = f"{server.url}/api/v1/explorer/spaces/bench/map"
            first = timed(lambda: httpx.get(url, timeout=600).raise_for_status())
            body = httpx.get(url, timeout=600).content
            cached = timed(lambda: httpx.get(url, timeout=600).raise_for_status(), repeat=5)
            shown = min(args.rows, 100_000)
            print(f"\nmap route, {args.rows:,} rows x {args.dim}, {shown:,} points on the map:")
            print(f"  first answer (sample, PCA, pack): {first:6.2f} s")
            print(f"  cached answer:                    {cached:6.2f} s")
            print(f"  size: {len(body) / 1e6:.1f} MB ({len(body) / shown:.0f} B a point)")
            browser_figures(server.url, shown)
            client.close()
        finally:
            server.stop()


def browser_figures(url: str, points: int) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("\nno Chromium installed: page figures skipped")
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        started = time.perf_counter()
        page.goto(f"{url}/#space=bench")
        page.wait_for_selector("body[data-state=ready]", timeout=600_000)
        loaded = time.perf_counter() - started
        draw = page.evaluate(
            "() => { const m = window.chromaExplorer.map, t = [];"
            " for (let k = 0; k < 30; k++) { const s = performance.now(); m.draw();"
            " t.push(performance.now() - s); } t.sort((a, b) => a - b); return t[15]; }"
        )
        hit = page.evaluate(
            "() => { const m = window.chromaExplorer.map, s = performance.now();"
            " for (let k = 0; k < 10000; k++) m.pointAt(200 + k % 800, 100 + k % 500);"
            " return (performance.now() - s) / 10000; }"
        )
        drawn = page.locator("#points").get_attribute("data-drawn")
        print(f"\npage in headless Chromium (1440 x 1000), {points:,} points:")
        print(f"  load to drawn (map cached):  {loaded:6.2f} s")
        print(f"  full redraw:                 {draw:6.1f} ms (median of 30), {drawn} drawn")
        print(f"  hover hit-test:              {1000 * hit:6.1f} us")
        browser.close()


if __name__ == "__main__":
    main()
