"""Presentation of results: markdown table, CSV, figures and the HTML report.

Everything here turns numbers that ``evaluate.py`` (and ``regress.py``, for its per-sample
CSV) computed into files; nothing here computes a metric (``utils.scoring`` does).
``write_evaluation`` writes every file of one evaluation run. The HTML report is one file: figures are embedded as PNG data URIs and,
by default, every clip as a small mp4 data URI, so ``report.html`` can be mailed or moved
alone (``embed=False`` links the media files relatively instead). The page marks every
``<video>`` and ``<img>`` with ``data-loaded="1"`` (or ``data-error``) once the browser has
loaded it, and sets ``data-media-checked`` on ``<body>`` when all have settled, so a headless
browser test can check that it renders.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils import layout
from utils.io import atomic_path, write_json, write_text
from utils.video import write_mp4

MIME = {".mp4": "video/mp4", ".gif": "image/gif", ".png": "image/png", ".webm": "video/webm"}


def format_value(value: float | None, digits: int = 3) -> str:
    """Number for tables: ``-`` for None/NaN, ``inf`` kept, else ``digits`` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def summary_rows(metrics: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Rows (metric, mean, SEM, chance or baseline, n, description) of the metrics summary."""
    rows = []
    for name, entry in metrics.items():
        reference = entry.get("chance")
        reference_text = f"chance {format_value(reference)}" if reference is not None else ""
        if entry.get("baseline") is not None:
            reference_text = f"{entry.get('baseline_label', 'baseline')} {format_value(entry['baseline'])}"
        rows.append([name, format_value(entry["mean"]), format_value(entry["sem"]), reference_text or "-", str(entry["n"]), entry.get("description", "")])
    return rows


SUMMARY_HEADER = ["metric", "mean", "SEM", "chance / baseline", "n", "what"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (pipes in cells escaped)."""
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def protocol_rows(card: dict[str, Any]) -> list[list[str]]:
    """Rows (setting, value) of the protocol card (``utils.scoring.protocol_card``); nested values as ``k=v`` lists."""
    def text(value: Any) -> str:
        if isinstance(value, dict):
            return "; ".join(f"{k}={text(v)}" for k, v in value.items()) or "none"
        if isinstance(value, (list, tuple)):
            return ", ".join(str(v) for v in value)
        return str(value)

    return [[key, text(value)] for key, value in card.items()]


PROTOCOL_HEADER = ["setting", "value"]


def method_line(result: dict[str, Any]) -> str:
    """``method X, protocol Y`` of a result (empty for results without a protocol card)."""
    card = result.get("protocol")
    return f"method {card['method']}, protocol {card['protocol']}" if card else ""


def metrics_markdown(result: dict[str, Any], random_models: bool = False) -> str:
    """``metrics.md``: title, method and protocol, the notes, the summary table, the protocol card and regression numbers."""
    parts = [f"# Evaluation of `{result['run']}` ({result['dataset']}, {result['n_clips']} clips)\n"]
    if result.get("protocol"):
        parts.append(f"{method_line(result)}\n")
    if result.get("synthetic"):
        parts.append(f"> {SYNTHETIC_NOTE}\n")
    if random_models:
        parts.append(f"> {TINY_NOTE}\n")
    parts.append(markdown_table(SUMMARY_HEADER, summary_rows(result["metrics"])))
    if result.get("skipped"):
        parts.append("\nNot computed: " + "; ".join(f"`{k}` ({v})" for k, v in result["skipped"].items()) + "\n")
    if result.get("protocol"):
        parts.append("\n## Protocol card\n\n" + markdown_table(PROTOCOL_HEADER, protocol_rows(result["protocol"])))
    if result.get("regression"):
        parts.append("\n## Regression (from predictions/<run>/metrics.json)\n\n")
        parts.append(markdown_table(*regression_rows(result["regression"])))
    return "\n".join(parts)


def flatten_numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``{"a.b.c": value}`` (lists and strings skipped)."""
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten_numbers(value, f"{prefix}{key}."))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix[:-1]] = float(tree)
    return out


REGRESSION_HEADER = ["target", "subject", "pearson_r", "feature_r", "r2", "2-way", "5-way", "10-way"]


def regression_rows(regression: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the regression table: per target and test subject (regress.py's metrics.json),
    or every numeric leaf for another layout."""
    targets = regression.get("targets") if isinstance(regression, dict) else None
    rows = []
    for target, entry in (targets or {}).items():
        for subject, values in (entry.get("subjects") or {}).items() if isinstance(entry, dict) else []:
            ident = values.get("identification") or {}
            rows.append([target, subject, *(format_value(values.get(k)) for k in ("pearson_r", "feature_r", "r2")),
                         *(format_value(ident.get(k)) for k in ("2-way", "5-way", "10-way"))])
    if rows:
        return REGRESSION_HEADER, rows
    return ["quantity", "value"], [[k, format_value(v, 4)] for k, v in flatten_numbers(regression).items()]


def write_per_sample_csv(path: str | Path, stimuli: Sequence[str], columns: dict[str, np.ndarray], extra: dict[str, Sequence[str]] | None = None) -> None:
    """``per_sample.csv``: one row per clip, ``stimulus``, the ``extra`` text columns, then metric columns."""
    extra = extra or {}
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["stimulus", *extra, *columns])
        for i, stim in enumerate(stimuli):
            writer.writerow([stim, *(extra[k][i] for k in extra), *(repr(float(columns[k][i])) for k in columns)])


REGRESSION_CSV_HEADER = ["target", "subject", "stimulus", "pearson_r", "mse"]


def regression_csv(rows: Sequence[Sequence]) -> str:
    """regress.py's ``per_sample.csv`` text: header target,subject,stimulus,pearson_r,mse, then ``rows``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REGRESSION_CSV_HEADER)
    writer.writerows(rows)
    return buffer.getvalue()


def read_regression_csv(path: str | Path) -> list[list[str]]:
    """Rows of an earlier regression ``per_sample.csv`` (without its header); [] when absent."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.reader(handle))[1:]


# ---------------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    _pyplot().close(fig)
    return path


def plot_distributions(columns: dict[str, np.ndarray], chance: dict[str, float | None], path: str | Path) -> Path:
    """Histogram of every per-clip metric (chance as a dashed line) -> PNG."""
    plt = _pyplot()
    names = list(columns)
    n_cols = min(4, max(1, len(names)))
    n_rows = math.ceil(len(names) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.4 * n_rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        values = np.asarray(columns[name], dtype=float)
        ax.hist(values[np.isfinite(values)], bins=min(20, max(5, len(values) // 2)), color="#4c72b0")
        if chance.get(name) is not None:
            ax.axvline(chance[name], color="k", linestyle="--", linewidth=1, label="chance")
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_group_bars(groups: dict[str, dict[str, tuple[float, float]]], chance: dict[str, float | None], path: str | Path) -> Path:
    """Bars of mean +- SEM per group (subject or run) for each metric -> PNG.

    groups: ``{group: {metric: (mean, sem)}}``.
    """
    plt = _pyplot()
    names = sorted({m for values in groups.values() for m in values})
    labels = list(groups)
    n_cols = min(4, max(1, len(names)))
    n_rows = math.ceil(len(names) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.4 * n_rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        means = [groups[g].get(name, (np.nan, 0.0))[0] for g in labels]
        sems = [groups[g].get(name, (np.nan, 0.0))[1] for g in labels]
        ax.bar(range(len(labels)), means, yerr=sems, color="#55a868", capsize=3)
        reference = chance.get(name, 0.5 if name.endswith("2-way") else None)
        if reference is not None:
            ax.axhline(reference, color="k", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_examples(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path, n_frames: int = 5) -> Path:
    """Frame strips: for each (name, ground truth (T,H,W,3), reconstruction (T,H,W,3)) two rows -> PNG."""
    plt = _pyplot()
    from utils.video import sample_indices

    fig, axes = plt.subplots(2 * len(pairs), n_frames, figsize=(1.4 * n_frames, 1.5 * 2 * len(pairs)), squeeze=False)
    for row, (name, true, pred) in enumerate(pairs):
        for label, clip, ax_row in (("truth", true, axes[2 * row]), ("recon", pred, axes[2 * row + 1])):
            for ax, index in zip(ax_row, sample_indices(len(clip), n_frames), strict=True):
                ax.imshow(clip[index])
                ax.set_xticks([])
                ax.set_yticks([])
            ax_row[0].set_ylabel(f"{name}\n{label}", fontsize=7)
    fig.tight_layout()
    return _save(fig, Path(path))


# ---------------------------------------------------------------------------------- html

SYNTHETIC_NOTE = (
    "SYNTHETIC DEMO DATA: the videos are procedurally generated and the fMRI is simulated from a known "
    "encoding model. These numbers show that the pipeline carries information end to end; they are not "
    "results on real brains."
)
TINY_NOTE = (
    "Models: the 'tiny' preset (small random-weight networks built offline). Semantic metrics "
    "(classifiers, CLIP, captions) then only test the machinery; use --preset default for real numbers."
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f0f0f0}.note{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em;margin:.8em 0}
.clip{display:inline-block;vertical-align:top;margin:6px;padding:6px;border:1px solid #ddd;width:330px;font-size:12px}
.clip video,.clip img.media{width:150px;height:150px;object-fit:contain;background:#000}
.pair{display:flex;gap:6px}.pair figure{margin:0;text-align:center}.caption{margin:3px 0}
img.figure{max-width:100%;border:1px solid #eee;margin:.5em 0}
"""

_SCRIPT = """
(function(){
  var media = Array.prototype.slice.call(document.querySelectorAll('video, img'));
  var pending = media.length;
  function done(el, ok){
    if (el.dataset.loaded || el.dataset.error) return;
    if (ok) el.dataset.loaded = '1'; else el.dataset.error = '1';
    pending -= 1;
    if (pending === 0) document.body.dataset.mediaChecked = '1';
  }
  if (pending === 0) document.body.dataset.mediaChecked = '1';
  media.forEach(function(el){
    if (el.tagName === 'VIDEO') {
      if (el.readyState >= 2) done(el, true);
      el.addEventListener('loadeddata', function(){ done(el, true); });
      el.addEventListener('error', function(){ done(el, false); });
    } else {
      if (el.complete) done(el, el.naturalWidth > 0);
      el.addEventListener('load', function(){ done(el, el.naturalWidth > 0); });
      el.addEventListener('error', function(){ done(el, false); });
    }
  });
})();
"""


def media_src(path: str | Path, report_dir: str | Path, embed: bool) -> str:
    """``src`` for a media file: a base64 data URI (embed) or a path relative to the report."""
    path = Path(path)
    if embed:
        mime = MIME.get(path.suffix.lower(), "application/octet-stream")
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return Path(_relative(path, Path(report_dir))).as_posix()


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())


def png_data_uri(path: str | Path) -> str:
    """PNG file -> data URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _video_tag(src: str, label: str) -> str:
    return (
        f'<figure><video src="{html.escape(src, quote=True)}" autoplay loop muted playsinline preload="auto" '
        f'title="{html.escape(label, quote=True)}"></video><figcaption>{html.escape(label)}</figcaption></figure>'
    )


def clip_card(stimulus: str, true_src: str, pred_src: str, human: Sequence[str], decoded: str | None, scores: dict[str, float]) -> str:
    """One gallery cell: ground truth beside reconstruction, captions, per-clip scores."""
    human_html = ""
    if human:
        rest = html.escape(" | ".join(human[1:]), quote=True)
        human_html = f'<div class="caption" title="{rest}"><b>human:</b> {html.escape(human[0])}</div>'
    decoded_html = f'<div class="caption"><b>decoded:</b> {html.escape(decoded)}</div>' if decoded is not None else ""
    score_text = ", ".join(f"{k} {format_value(v, 2)}" for k, v in scores.items())
    return (
        f'<div class="clip" data-stimulus="{html.escape(stimulus, quote=True)}"><div><b>{html.escape(stimulus)}</b></div>'
        f'<div class="pair">{_video_tag(true_src, "ground truth")}{_video_tag(pred_src, "reconstruction")}</div>'
        f"{human_html}{decoded_html}<div class=\"scores\">{html.escape(score_text)}</div></div>"
    )


def render_report(result: dict[str, Any], cards: Sequence[str], figures: dict[str, str], random_models: bool = False) -> str:
    """The whole ``report.html`` text.

    result: what goes to metrics.json; cards: from ``clip_card``; figures: ``{title: src}``;
    random_models: add the note that the models' scores measure nothing.
    """
    title = f"brain2video evaluation: {result['run']} ({result['dataset']})"
    notes = []
    protocol_html = ""
    if result.get("protocol"):
        notes.append(f'<p id="method-protocol"><b>{html.escape(method_line(result))}</b></p>')
        protocol_html = "<h2>Protocol card</h2>" + _table_html(PROTOCOL_HEADER, protocol_rows(result["protocol"]), "protocol-card")
    if result.get("synthetic"):
        notes.append(f'<div class="note" id="synthetic-note">{html.escape(SYNTHETIC_NOTE)}</div>')
    if random_models:
        notes.append(f'<div class="note">{html.escape(TINY_NOTE)}</div>')
    skipped = ""
    if result.get("skipped"):
        skipped = "<p>Not computed: " + "; ".join(f"<code>{html.escape(k)}</code> ({html.escape(v)})" for k, v in result["skipped"].items()) + "</p>"
    regression_html = ""
    if result.get("regression"):
        header, rows = regression_rows(result["regression"])
        regression_html = "<h2>Regression (test predictions vs targets)</h2>" + _table_html(header, rows, "regression-table")
    settings = ", ".join(f"{k}={v}" for k, v in result.get("settings", {}).items())
    figure_html = "".join(
        f'<h3>{html.escape(name)}</h3><img class="figure" alt="{html.escape(name, quote=True)}" src="{html.escape(src, quote=True)}">'
        for name, src in figures.items()
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(notes)}"
        f"<p>{result['n_clips']} clips; preset <code>{html.escape(str(result.get('preset')))}</code>; {html.escape(settings)}</p>"
        "<h2>Metrics</h2>" + _table_html(SUMMARY_HEADER, summary_rows(result["metrics"]), "metrics-table") + skipped
        + protocol_html + regression_html + "<h2>Figures</h2>" + figure_html
        + f'<h2>Gallery</h2><div id="gallery">{"".join(cards)}</div>'
        + f"<script>{_SCRIPT}</script></body></html>\n"
    )




# ---------------------------------------------------------------------------------- one evaluation run


@dataclass(frozen=True)
class ReportSettings:
    """What the report shows; ``evaluate.py`` reads its flag defaults from here.

    report_size: side in px of the clips of report.html. embed_media: embed clips and figures
    in report.html (one self-contained file) instead of linking them. n_examples: clips of the
    examples figure. random_models: the preset's models have random weights
    (``models.zoo.has_random_weights``): the report says their scores measure nothing.
    """

    report_size: int = 128
    embed_media: bool = True
    n_examples: int = 4
    random_models: bool = False


@dataclass
class ClipMedia:
    """One clip of the gallery: uint8 (T, s, s, 3) reconstruction and truth at the report size, played at ``fps``."""

    stimulus: str
    pred: np.ndarray
    true: np.ndarray
    fps: float


@dataclass
class RunEvaluation:
    """Everything written for one evaluated run.

    result: what goes to metrics.json; stimuli: the N clips; columns: per-clip metrics
    ``{name: (N,)}``; text: per-clip caption columns ``{name: N strings}`` (``decoded_caption``
    among them); humans: human captions per stimulus; media: the gallery clips.
    """

    result: dict[str, Any]
    stimuli: list[str]
    columns: dict[str, np.ndarray]
    text: dict[str, list[str]]
    humans: dict[str, list[str]]
    media: list[ClipMedia]


def write_evaluation(
    out_dir: str | Path, evaluation: RunEvaluation, groups: dict[str, dict[str, tuple[float, float]]],
    settings: ReportSettings, card_scores: Callable[[dict[str, np.ndarray], int], dict[str, float]],
) -> Path:
    """metrics.md, per_sample.csv, figures, media, report.html and, last, metrics.json of one run.

    groups: the per-subject bars (``utils.scoring.subject_groups``); card_scores(columns, i):
    the numbers shown on clip i's card. metrics.json is written last: its inputs fingerprint
    marks the run complete for evaluate.py's resume check.
    """
    out_dir = Path(out_dir)
    result, columns, text = evaluation.result, evaluation.columns, evaluation.text
    write_text(layout.metrics_markdown_path(out_dir), metrics_markdown(result, settings.random_models))
    write_per_sample_csv(layout.per_sample_path(out_dir), evaluation.stimuli, columns, extra=text)

    chance = {k: v["chance"] for k, v in result["metrics"].items()}
    examples = [(m.stimulus, m.true, m.pred) for m in evaluation.media[: settings.n_examples]]
    figures = {
        "Per-clip distributions": plot_distributions(columns, chance, layout.figure_path(out_dir, "distributions")),
        "Per subject (mean +- SEM)": plot_group_bars(groups, chance, layout.figure_path(out_dir, "per_subject")),
        "Examples (truth above reconstruction)": plot_examples(examples, layout.figure_path(out_dir, "examples")),
    }
    figure_src = {k: png_data_uri(v) if settings.embed_media else media_src(v, out_dir, False) for k, v in figures.items()}

    cards = []
    for i, clip in enumerate(evaluation.media):
        sources = {}
        for kind, frames in (("gt", clip.true), ("recon", clip.pred)):
            path = layout.media_path(out_dir, clip.stimulus, kind)
            write_mp4(path, frames, clip.fps)
            sources[kind] = media_src(path, out_dir, settings.embed_media)
        decoded = text["decoded_caption"][i] or None
        cards.append(clip_card(clip.stimulus, sources["gt"], sources["recon"], evaluation.humans.get(clip.stimulus, []), decoded, card_scores(columns, i)))
    write_text(layout.report_path(out_dir), render_report(result, cards, figure_src, settings.random_models))
    write_json(layout.metrics_path(out_dir), result)
    return out_dir
