"""What a run writes and prints besides the model: dev-metric history, curves, the before/after table, the card."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from ragtune.core.data import LabelledQuery
from ragtune.core.io import write_text
from ragtune.core.redaction import shown, shown_in

DEV_QUERIES_FILE = "dev_queries.csv"


def dev_query_rows(queries: Sequence[LabelledQuery]) -> list[dict[str, Any]]:
    """The held-out dev queries as rows of the sample data's format (row: where each sits in --train_data)."""
    return [{"row": q.row, "Query": q.query, "Ground truth document": ", ".join(q.relevant_ids),
             **({"Ground truth answer": q.answer} if q.answer else {})} for q in queries]


def write_dev_queries(output_dir: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """``dev_queries.csv``: the queries this run held out, so that a later evaluation can leave them out (or use
    them), instead of scoring the model on what it was selected on. Texts shown as everywhere (masked under
    --pii warn); a spreadsheet-friendly UTF-8 CSV with a byte-order mark."""
    import csv
    import io

    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["row", "Query", "Ground truth document"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: shown(value) if isinstance(value, str) else value for key, value in row.items()})
    write_text(Path(output_dir) / DEV_QUERIES_FILE, "\ufeff" + buffer.getvalue())


def show_card_data_masked(model: Any) -> None:
    """sentence-transformers writes its own model card (README.md) at every save, checkpoints included, with
    training examples and widget sentences drawn from the data: before each rendering, the card data's fields go
    through :func:`ragtune.core.redaction.shown` (masking the rendered card would miss a value its YAML wraps
    across lines). A model without such card data (the generator's) is left alone."""
    card_data = getattr(model, "model_card_data", None)
    if not dataclasses.is_dataclass(card_data) or getattr(card_data, "shown_masked", False):
        return
    to_dict = card_data.to_dict

    def masked_to_dict(*args: Any, **kwargs: Any) -> Any:
        for name in (f.name for f in dataclasses.fields(card_data)):
            value = getattr(card_data, name)
            masked = shown_in(value)
            if masked is not value and _differs(masked, value):  # only the fields that show data are replaced
                setattr(card_data, name, masked)
        return shown_in(to_dict(*args, **kwargs))

    card_data.to_dict = masked_to_dict
    card_data.shown_masked = True


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except Exception:  # noqa: BLE001 - values without a plain equality (arrays): replace them
        return True


def dev_metrics_from_history(log_history: list[dict[str, Any]], prefix: str) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) for each dev evaluation the Trainer logged, metric names without the prefix."""
    points = []
    for entry in log_history:
        values = {k[len(prefix):]: v for k, v in entry.items() if k.startswith(prefix)}
        if values:
            points.append((int(entry.get("step", 0)), values))
    return points


def smoothed(values: Sequence[float]) -> list[float]:
    """TensorBoard's debiased exponential moving average, its factor set by the number of points (none for 5 or
    fewer, 0.5 for 10, 0.9 for 50, at most 0.95): a loss logged every few steps is noisy enough to hide its trend."""
    factor = min(0.95, max(0.0, 1.0 - 5.0 / max(1, len(values))))
    out, running, weight = [], 0.0, 0.0
    for value in values:
        running = factor * running + (1 - factor) * value
        weight = factor * weight + (1 - factor)
        out.append(running / weight)
    return out


def plot_training_curves(log_history: list[dict[str, Any]], prefix: str, path: str | Path,
                         metric_names: tuple[str, ...] = ("ndcg@5", "mrr@5", "recall@5", "hit@5"), *,
                         best_step: int | None = None, reference: dict[str, float] | None = None,
                         reference_label: str = "BM25") -> Path:
    """PNG of what a run did, against optimizer steps: the training loss (smoothed, the raw loss faint behind it),
    the learning rate, and the dev metrics with the best checkpoint's step marked and ``reference`` (BM25's dev
    value of each metric, where the run computed it) as a dashed line: the bar a fine-tuned model must clear."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr, ax_dev) = plt.subplots(1, 3, figsize=(15, 4), gridspec_kw={"width_ratios": [4, 3, 5]})
    _plot_loss(ax_loss, [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e])
    rates = [(e["step"], e["learning_rate"]) for e in log_history if "learning_rate" in e and "step" in e]
    if rates:
        ax_lr.plot(*zip(*rates), color="tab:purple")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_lr.set(title="learning rate", xlabel="step")
    _plot_dev(ax_dev, dev_metrics_from_history(log_history, prefix), metric_names, best_step, reference or {},
              reference_label)
    for ax in (ax_loss, ax_lr, ax_dev):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_loss(ax: Any, losses: list[tuple[int, float]]) -> None:
    if losses:
        steps, values = zip(*losses)
        ax.plot(steps, values, color="tab:red", alpha=0.25, linewidth=1, label="raw")
        ax.plot(steps, smoothed(values), color="tab:red", linewidth=2, label="smoothed")
        ax.legend(loc="upper right")
    ax.set(title="training loss", xlabel="step", ylabel="loss")


def _plot_dev(ax: Any, dev: list[tuple[int, dict[str, float]]], metric_names: Sequence[str], best_step: int | None,
              reference: dict[str, float], reference_label: str) -> None:
    """Dev metrics per evaluation; the best checkpoint's step (a vertical line, each metric's value starred);
    each metric's reference value as a dashed line of its colour."""
    for name in metric_names:
        series = [(step, values[name]) for step, values in dev if name in values]
        if not series:
            continue
        line, = ax.plot(*zip(*series), marker="o", markersize=3, label=name)
        best = [value for step, value in series if step == best_step]
        if best:
            ax.plot([best_step], best, marker="*", markersize=14, color=line.get_color(), markeredgecolor="black")
        if name in reference:
            ax.axhline(reference[name], color=line.get_color(), linestyle="--", linewidth=1, alpha=0.8,
                       label=f"{reference_label} {name}")
    if best_step is not None and dev:
        ax.axvline(best_step, color="black", linestyle=":", linewidth=1, label=f"best checkpoint (step {best_step})")
    ax.set(title="dev metrics", xlabel="step", ylim=(0, 1.02))
    if dev:  # beside the axes: inside, it would hide the last evaluations (where the best checkpoint usually is)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)


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

