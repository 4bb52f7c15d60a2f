"""What the benchmark scripts record about the machine, the matmul rate they compare against, and how they write
their results."""

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (from lscpu), or what platform knows when lscpu is missing."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def machine_info(threads: int) -> dict:
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": threads,
            "python": platform.python_version(), "load_average_at_start": list(os.getloadavg())}


def matmul_rate(size: int = 2048, repeats: int = 2, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of one size x size matrix product in `dtype`, at the current thread count, over `repeats` tries."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up: the first product also pays for allocations (and, on a GPU, for the kernel choice)
    best = 0.0
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


class MatmulReference:
    """The matmul rate under the load the measured work saw. Each `sample()` (called between the rounds of a
    measurement, so that it takes its turn with the variants) times size x size products for `share` of the time
    since the previous sample (at least one product), and `rate` is all their FLOPs over all their seconds: on a
    shared machine, the rate the measured steps could have had. `best` is the fastest single product, what a quiet
    moment gives."""

    def __init__(self, size: int = 2048, device: str = "cpu", dtype: torch.dtype = torch.float32, share: float = 0.1):
        self.size, self.device, self.share = size, device, share
        self.a = torch.randn(size, size, device=device, dtype=dtype)
        self.b = torch.randn(size, size, device=device, dtype=dtype)
        self.a @ self.b  # warm-up
        self.seconds, self.count, self.best = 0.0, 0, 0.0
        self.last = time.perf_counter()

    def sample(self) -> None:
        budget = self.share * (time.perf_counter() - self.last)
        spent = 0.0
        while spent == 0.0 or spent < budget:
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            self.a @ self.b
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            spent += seconds
            self.count += 1
            self.best = max(self.best, 2 * self.size**3 / seconds / 1e9)
        self.seconds += spent
        self.last = time.perf_counter()

    @property
    def rate(self) -> float:
        return 2 * self.size**3 * self.count / self.seconds / 1e9


def write_results(folder, results: dict, markdown: str) -> None:
    """results.json and results.md into `folder` (created), and the markdown on the console."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (folder / "results.md").write_text(markdown)
    print(markdown)
