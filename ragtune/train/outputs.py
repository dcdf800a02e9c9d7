"""What a finished run writes and prints besides the model: dev-metric history, curves, the before/after table."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def dev_metrics_from_history(log_history: list[dict[str, Any]], prefix: str) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) for each dev evaluation the Trainer logged, metric names without the prefix."""
    points = []
    for entry in log_history:
        values = {k[len(prefix):]: v for k, v in entry.items() if k.startswith(prefix)}
        if values:
            points.append((int(entry.get("step", 0)), values))
    return points


def plot_training_curves(log_history: list[dict[str, Any]], prefix: str, path: str | Path,
                         metric_names: tuple[str, ...] = ("ndcg@5", "mrr@5", "recall@5", "hit@5")) -> Path:
    """PNG of training loss and dev metrics against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    dev = dev_metrics_from_history(log_history, prefix)
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        ax_loss.plot(*zip(*losses), marker=".", color="tab:red")
    ax_loss.set(title="training loss", xlabel="step", ylabel="loss")
    for name in metric_names:
        series = [(step, values[name]) for step, values in dev if name in values]
        if series:
            ax_dev.plot(*zip(*series), marker="o", label=name)
    ax_dev.set(title="dev metrics", xlabel="step", ylim=(0, 1.02))
    if dev:
        ax_dev.legend(loc="lower right")
    for ax in (ax_loss, ax_dev):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_metrics_table(columns: dict[str, dict[str, float]], names: tuple[str, ...], ks: tuple[int, ...]) -> str:
    """Plain-text table: one row per metric@k, one column per run (e.g. base / fine-tuned)."""
    headers = ["metric"] + list(columns)
    rows = []
    for name in names:
        for k in ks:
            key = f"{name}@{k}"
            rows.append([key] + [f"{values.get(key, float('nan')):.4f}" for values in columns.values()])
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])

