"""Which machine produced a result: CPU model and vendor, the ISA flags that pick numeric kernels, library
versions and the thread and ISA settings in force.

A golden records this when it is frozen and the report prints it beside the current machine, because
floating-point results move between CPUs (DESIGN §5a): a golden-pair difference is read against where each side
ran. Torch facts are included only where torch is already importable (a runtime-only install has none).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# CPU flags that change which kernels oneDNN, MKL, ATen and MLAS run.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8")
# Environment variables that steer those kernels or the thread count.
SETTINGS_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
                "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return info
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if ":" not in line:
            if info:
                break  # first processor block only
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _torch_facts() -> dict[str, object]:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    facts: dict[str, object] = {"torch_threads": torch.get_num_threads()}
    try:
        facts["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        pass
    config = torch.__config__.show()
    for line in config.splitlines():
        text = line.strip(" -")
        if text.startswith("Intel(R) oneAPI Math Kernel Library Version") or text.startswith("Intel(R) Math Kernel"):
            facts["mkl"] = text.split("Version", 1)[-1].strip()
        elif text.startswith("Intel(R) MKL-DNN") or text.startswith("oneDNN"):
            facts["onednn"] = text.split(" (Git", 1)[0].split()[-1]
    return facts


def describe() -> dict[str, object]:
    """The machine and numeric settings of this process (plain JSON values)."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    out: dict[str, object] = {
        "cpu_model": cpu.get("model name", platform.processor() or "unknown"),
        "cpu_vendor": cpu.get("vendor_id", "unknown"),
        "cpu_count": os.cpu_count(),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "numpy": _version("numpy"),
        "env": {k: os.environ[k] for k in SETTINGS_ENV if k in os.environ},
    }
    out.update(_torch_facts())
    return out


def summary(info: dict | None) -> str:
    """One line for reports: CPU, vendor, ISA, versions, threads and settings."""
    if not info:
        return "unknown (frozen before machine provenance was recorded)"
    parts = [str(info.get("cpu_model", "?")), f"[{info.get('cpu_vendor', '?')}]",
             "isa " + ",".join(info.get("isa", [])) if info.get("isa") else "isa ?",
             f"torch {info.get('torch', '?')}"]
    if "aten_cpu_capability" in info:
        parts.append(f"ATen {info['aten_cpu_capability']}")
    if "torch_threads" in info:
        parts.append(f"{info['torch_threads']} torch threads")
    parts.append(f"onnxruntime {info.get('onnxruntime', '?')}")
    env = info.get("env") or {}
    if env:
        parts.append(" ".join(f"{k}={v}" for k, v in sorted(env.items())))
    return " · ".join(parts)
