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

