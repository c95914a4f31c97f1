"""The plots of a run: throughput by concurrency, and the open loop's latency CDF
(matplotlib comes with the bench extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for system, entry in results["systems"].items():
        runs = [r for r in entry.get("runs", []) if "throughput" in r]
        if runs:
            xs = [r["concurrency"] for r in runs]
            ax.plot(xs, [r["throughput"] for r in runs], marker="o", label=system)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrency (closed loop)")
    ax.set_ylabel("sagas per second (raw: commits per second)")
    ax.set_title("Throughput by concurrency")
    ax.grid(visible=True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)

    fig, ax = plt.subplots(figsize=(8, 5))
    for system, entry in results["systems"].items():
        run = entry.get("open")
        if run and run.get("cdf_ms"):
            points = run["cdf_ms"]
            ax.plot([p[1] for p in points], [p[0] for p in points], label=system)
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency, ms (open loop)")
    ax.set_ylabel("fraction of sagas")
    ax.set_title(f"Latency CDF at {results['config']['rate']:g} sagas/s")
    ax.grid(visible=True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "latency_cdf.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)
    return made
