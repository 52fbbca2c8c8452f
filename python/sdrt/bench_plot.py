"""PNG charts of `sdrt bench` results (matplotlib, headless): per-stage time as stacked bars for each
swept value (and each configuration under --compare), next to it/s per value, where a sweep is
easier to look at than to read."""
from __future__ import annotations

STACKED_STAGES = ("text_encode", "unet", "sampler_overhead", "vae_decode")


def _points(result: dict) -> tuple[str, list, list]:
    if "points" in result:
        return result["sweep"]["key"], result["points"], result["labels"]
    # a single benchmark: one group of bars
    return "run", [{"value": "", **result}], [c["label"] for c in result["configs"]]


def plot(result: dict, path: str) -> None:
    """Write the chart of a `benchmark` or `sweep` result to `path` (PNG)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'sdrt[plot]'") from None
    matplotlib.use("Agg")  # files only: no display is needed or touched
    import matplotlib.pyplot as plt

    key, points, labels = _points(result)
    n_cfg, width = len(labels), 0.8 / len(labels)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ci in range(n_cfg):
        xs = [pi + (ci - (n_cfg - 1) / 2) * width for pi in range(len(points))]
        bottom = [0.0] * len(points)
        for si, stage in enumerate(STACKED_STAGES):
            heights = [p["configs"][ci][stage]["median"] * 1e3 for p in points]
            left.bar(xs, heights, width * 0.95, bottom=bottom, color=colours[si % len(colours)],
                     hatch="" if ci == 0 else "//", edgecolor="white",
                     label=f"{stage}" + (f" ({chr(97 + ci)})" if n_cfg > 1 else ""))
            bottom = [b + h for b, h in zip(bottom, heights)]
        right.plot(range(len(points)), [p["configs"][ci]["it_per_s"]["median"] for p in points], marker="o",
                   label=f"{chr(97 + ci)}: {labels[ci]}")
    ticks = [str(p["value"]) for p in points]
    for ax in (left, right):
        ax.set_xticks(range(len(points)), ticks)
        ax.set_xlabel(key)
    left.set_ylabel("median time per image batch (ms)")
    left.set_title("per-stage time")
    left.legend(fontsize=7)
    right.set_ylabel("sampling it/s (median)")
    right.set_title("throughput")
    right.legend(fontsize=7)
    machine = points[0].get("machine", {})
    fig.suptitle(f"sdrt bench — {machine.get('gpu') or machine.get('platform', '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
