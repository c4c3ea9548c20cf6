"""Screenshots of the dashboard for the README, made the way a learner opens it.

    uv run scripts/screenshots.py            # writes docs/images/*.png
    uv run scripts/screenshots.py --out DIR  # elsewhere

It trains a 4-job learning-rate sweep of the quadratic (seed 004's model) and seed 000's 2-2-2
net into a temporary dir, serves each with TensorBoard on 127.0.0.1 only, and photographs the
views with headless Chromium (Debian: `apt-get install chromium`):

    loss_first.png   Time Series of the sweep, as it opens: the Loss group first
    hparams.png      HParams of the sweep: the swept learning rate and the loss as columns
    figures.png      Images of seed 000: the run's figures, grouped together, the graph first
    graph.png        seed 000's computational graph with every value and gradient, as its run
                     wrote it (the Images tab shows it too, scaled to the card)

TensorBoard draws its charts with WebGL, which headless Chromium lacks: the pages are loaded
with TensorBoard's own `forceSVG` switch. The TensorBoard processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1500, 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    if shutil.which(args.browser) is None:
        print(f"error: no browser {args.browser!r}; apt-get install chromium", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        train("-m", "model=quadratic", "optimizer.lr=0.002,0.005,0.01,0.02", logs=logs)
        train("experiment=seed000", logs=logs)
        (sweep,) = (logs / "multiruns").iterdir()
        (seed000,) = (logs / "runs" / "seed000").iterdir()
        with tensorboard(sweep) as url:
            shoot(args.browser, f"{url}/?forceSVG=true#timeseries", args.out / "loss_first.png")
            shoot(args.browser, f"{url}/?forceSVG=true#hparams", args.out / "hparams.png")
        with tensorboard(seed000) as url:
            figures = f"{url}/?forceSVG=true#images&tagFilter=figures"
            shoot(args.browser, figures, args.out / "figures.png")
        shutil.copyfile(seed000 / "graph.png", args.out / "graph.png")
    for name in ("loss_first", "hparams", "figures", "graph"):
        print(args.out / f"{name}.png")
    return 0


def train(*overrides: str, logs: Path) -> None:
    command = [sys.executable, str(ROOT / "train.py"), *overrides, f"paths.log_dir={logs}"]
    subprocess.run([*command, "trainer.enable_progress_bar=false"], check=True, cwd=ROOT)


class tensorboard:  # used as a context manager, like open
    """``tensorboard --logdir`` on a free loopback port until its runs are loaded."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir

    def __enter__(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(self.logdir)]
        self.process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with opener.open(f"{url}/data/plugin/scalars/tags", timeout=5) as response:
                    if json.loads(response.read()):
                        time.sleep(3)  # the images and the hparams plugin read the same files
                        return url
            except OSError:
                pass
            time.sleep(0.5)
        self.process.kill()
        raise RuntimeError(f"TensorBoard on {self.logdir} did not start")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def shoot(browser: str, url: str, path: Path, height: int = HEIGHT) -> None:
    subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--hide-scrollbars",
            f"--window-size={WIDTH},{height}",
            "--virtual-time-budget=30000",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=180,
    )


if __name__ == "__main__":
    sys.exit(main())
