"""What a torch.profiler trace says about launch overhead: kernel launches, host syncs, the
host's and the device's busy time per step (shared by bench/train_profile.py and
bench/render_profile.py)."""

from __future__ import annotations

import torch

# CUDA runtime/driver calls that start a kernel, and those that block the host until the device
# has caught up (a copy to the host, .item(), an explicit synchronisation).
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
SCALAR_READ = "aten::_local_scalar_dense"  # .item(), bool(tensor), ... on a device tensor


def launch_summary(prof: torch.profiler.profile, steps: int, wall_ms_per_step: float) -> dict:
    """Per step of ``prof`` (``steps`` steps profiled): ``launches`` (kernel and graph launches),
    ``host_syncs`` (blocking runtime calls), ``scalar_reads`` (device scalars read by the host),
    ``device_busy_ms`` (kernel time; the device runs one stream, so kernels do not overlap),
    ``host_ops_ms`` (self CPU time of the aten operators) and ``device_busy_fraction`` of
    ``wall_ms_per_step`` (below 1: the device waits on the host)."""
    launches = syncs = scalars = 0
    device_us = host_us = 0.0
    for e in prof.key_averages():
        if e.key in LAUNCH_CALLS:
            launches += e.count
        elif e.key in SYNC_CALLS:
            syncs += e.count
        if e.key == SCALAR_READ:
            scalars += e.count
        if e.key.startswith("aten::"):
            host_us += e.self_cpu_time_total
        if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA:
            device_us += getattr(e, "self_device_time_total", 0.0)
    n = max(steps, 1)
    busy = device_us / 1000 / n
    return {"launches": round(launches / n, 1), "host_syncs": round(syncs / n, 2), "scalar_reads": round(scalars / n, 2),
            "device_busy_ms": round(busy, 3), "host_ops_ms": round(host_us / 1000 / n, 3),
            "device_busy_fraction": round(busy / wall_ms_per_step, 3) if wall_ms_per_step > 0 and device_us else None}


def print_summary(s: dict, what: str = "step") -> None:
    frac = s["device_busy_fraction"]
    share = "-" if frac is None else f"{100 * frac:.0f} %"
    print(f"per {what}: {s['launches']} kernel launches, {s['host_syncs']} host syncs ({s['scalar_reads']} scalar "
          f"reads), device busy {s['device_busy_ms']} ms ({share} of the wall time), aten host time {s['host_ops_ms']} ms")
