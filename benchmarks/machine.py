"""What the benchmark scripts record about the machine, and the float32 matmul rate they compare against."""

import os
import platform
import subprocess
import time

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


def matmul_rate(size: int = 2048, repeats: int = 2, device: str = "cpu") -> float:
    """Best float32 GFLOP/s of one size x size matrix product, at the current thread count, over `repeats` tries."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
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
