"""What every benchmark shares: peak RSS, the machine, a measured matmul peak, BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process' peak resident memory in MiB. Linux: VmHWM, the high-water mark of this
    program alone; ru_maxrss survives exec, so a child started by a larger parent would
    report the parent's memory at fork."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB, macOS: bytes


def device_name() -> str:
    """'CPU', or the GPU's name: benchmark sections are kept apart per device."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return (f"1 {device_name()} GPU, {os.cpu_count()} CPU cores, Python "
                f"{platform.python_version()}, torch {torch.__version__}")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads")


def matmul_peak_gflops(n: int = 1024, seconds: float = 3.0) -> float:
    """fp32 matmul throughput measured now, on this machine (its GPU if any): the MFU ceiling."""
    import torch

    cuda = torch.cuda.is_available()
    n = 8192 if cuda else n
    device = "cuda" if cuda else "cpu"
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        done += 1
        sync()
    return 2 * n ** 3 * done / (time.perf_counter() - t0) / 1e9


def update_benchmarks(section: str, path: Path = REPO / "BENCHMARKS.md") -> None:
    """Replace one benchmark's section (by its '## ' title) in BENCHMARKS.md, keep the others."""
    head = section.splitlines()[0]
    text = path.read_text() if path.is_file() else "# Benchmarks\n\n"
    parts = text.split("\n## ")
    kept = [p for p in parts[1:] if not ("## " + p).startswith(head)]
    path.write_text("\n## ".join([parts[0].rstrip("\n") + "\n", *kept]).rstrip("\n") + "\n\n" + section)
