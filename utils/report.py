"""Presentation of results: markdown table, CSV, figures and the HTML report.

Everything here turns numbers that ``evaluate.py`` (and ``regress.py``, for its per-sample
CSV) computed into files; nothing here computes a metric (``utils.scoring`` does).
``write_evaluation`` writes every file of one evaluation run. The HTML report is one file: figures are embedded as PNG data URIs and,
by default, every clip as a small mp4 data URI, so ``report.html`` can be mailed or moved
alone (``embed=False`` links the media files relatively instead). The page marks every
``<video>`` and ``<img>`` with ``data-loaded="1"`` (or ``data-error``) once the browser has
loaded it, and sets ``data-media-checked`` on ``<body>`` when all have settled, so a headless
browser test can check that it renders.

The report of a full prediction tables its oracle variants ("Where information is lost",
``oracle_rows``, from metrics.json's ``oracles``); every report has a table of the captions
the reconstructions were made with beside the true ones (``caption_rows``), and each gallery
card labels its captions. With random-weight models (the tiny preset) the tables print
"not a measurement" for the metrics computed with a model; the demo preset's note says its
models were fitted to the simulated world.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from utils import layout
from utils.io import atomic_path, write_json, write_text
from utils.scoring import BarPanel, is_model_based
from utils.video import write_mp4

MIME = {".mp4": "video/mp4", ".gif": "image/gif", ".png": "image/png", ".webm": "video/webm"}


def format_value(value: float | None, digits: int = 3) -> str:
    """Number for tables: ``-`` for None/NaN, ``inf`` kept, else ``digits`` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def not_measured_text(preset: str) -> str:
    """What a table shows instead of the score of a metric whose model has random weights."""
    return f"random model ({preset} preset): not a measurement"


def reference_text(entry: dict[str, Any], measured: bool = True) -> str:
    """``chance X`` or ``<baseline label> Y`` of a summary entry (a baseline only when ``measured``); "" when none."""
    if measured and entry.get("baseline") is not None:
        return f"{entry.get('baseline_label', 'baseline')} {format_value(entry['baseline'])}"
    return f"chance {format_value(entry['chance'])}" if entry.get("chance") is not None else ""


def summary_rows(metrics: dict[str, dict[str, Any]], not_measured: str | None = None) -> list[list[str]]:
    """Rows (metric, mean, SEM, chance or baseline, n, description) of the metrics summary.

    not_measured: the text shown instead of the numbers of model-based metrics (random-weight models), or None.
    """
    rows = []
    for name, entry in metrics.items():
        measured = not_measured is None or not is_model_based(name)
        numbers = [format_value(entry["mean"]), format_value(entry["sem"])] if measured else [not_measured, "-"]
        rows.append([name, *numbers, reference_text(entry, measured) or "-", str(entry["n"]), entry.get("description", "")])
    return rows


def oracle_rows(oracles: dict[str, dict[str, Any]], random_models: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the "where information is lost" table: one row per oracle variant (``metrics.json``'s
    ``oracles``, in its order), a column per metric: ``mean ± SEM (chance or mismatched baseline)``.

    random_models: model-based metrics show ``NOT_MEASURED_CELL`` instead of their numbers.
    """
    names = list(dict.fromkeys(name for entry in oracles.values() for name in entry["metrics"]))
    rows = []
    for entry in oracles.values():
        cells = []
        for name in names:
            value = entry["metrics"].get(name)
            if value is None:
                cells.append("-")
            elif random_models and is_model_based(name):
                cells.append(NOT_MEASURED_CELL)
            else:
                reference = reference_text(value)
                cells.append(f"{format_value(value['mean'])} ± {format_value(value['sem'])}" + (f" ({reference})" if reference else ""))
        rows.append([entry["label"], entry["run"], str(entry["n_clips"]), *cells])
    return ["variant", "run", "clips", *names], rows


NOT_MEASURED_CELL = "not a measurement"
ORACLE_INTRO = (
    "Each row replaces predicted inputs of the reconstruction by ground truth: the ground-truth rows bound what "
    "the video model and the caption allow, and the drop from row to row shows where information is lost. The two "
    "rows without diffusion (the VAE round trip of the true clip, and the predicted latent decoded at strength 0) are "
    "the baselines the generator must beat."
)


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


def report_notes(result: dict[str, Any], random_models: bool = False) -> dict[str, str]:
    """``{id: text}`` of the plain statements a report opens with: synthetic data (with, for the demo preset, that its
    models were fitted to that simulated world) and random-weight models."""
    notes = {}
    demo = result.get("preset") == "demo"
    if result.get("synthetic") or demo:
        notes["synthetic-note"] = " ".join(([SYNTHETIC_NOTE] if result.get("synthetic") else []) + ([DEMO_NOTE] if demo else []))
    if random_models:
        notes["random-models-note"] = TINY_NOTE
    return notes


def oracle_notes(result: dict[str, Any], random_models: bool = False) -> list[str]:
    """Lines under the oracle table: what a model-based cell of random models means, variants left out (not
    comparable) and variants not made or not evaluated."""
    lines = [f"Left out: `{run}` ({why})." for run, why in (result.get("oracles_excluded") or {}).items()]
    if not random_models:
        lines += generator_verdict(result.get("oracles") or {})
    if random_models and result.get("oracles"):
        lines.insert(0, f"'{NOT_MEASURED_CELL}': computed with a random model ({result.get('preset', '')} preset).")
    missing = result.get("oracles_missing") or {}
    if missing:
        lines.append(
            "Not available: " + ", ".join(f"`{run}`" for run in missing.values())
            + f" (reconstruct them with reconstruct_zeroscope.py --run {result['run']} --z-from/--caption-from, or --source targets, "
            f"and evaluate them together with `{result['run']}`)."
        )
    return lines


def generator_verdict(oracles: dict[str, dict[str, Any]]) -> list[str]:
    """A line saying plainly where the full prediction does not beat its predicted latent decoded without diffusion
    (the metrics on which the generator adds nothing at these settings); no line when it beats it on all."""
    full, decoded = oracles.get("full_prediction"), oracles.get("pred_latent_decoded")
    if not full or not decoded:
        return []
    higher = [name for name, value in full["metrics"].items()  # every column is higher-better; captions: none at strength 0
              if name in decoded["metrics"] and not name.startswith("caption_") and decoded["metrics"][name]["mean"] >= value["mean"]]
    if not higher:
        return []
    return [f"The generator adds nothing at these settings on {', '.join(higher)}: decoding the predicted latent without "
            "diffusion (strength 0) scores as high or higher than the full reconstruction."]


def first_of(captions: Sequence[str]) -> str:
    """The first human caption of a clip and how many more it has (``-`` for none)."""
    if not captions:
        return "-"
    return captions[0] + (f" (+{len(captions) - 1} more in the gallery)" if len(captions) > 1 else "")


def caption_rows(
    stimuli: Sequence[str], decoded: Sequence[str], blip: dict[str, str], humans: dict[str, list[str]], bleu: np.ndarray | None,
) -> list[list[str]]:
    """Rows (clip, caption of the reconstruction, BLIP caption of the watched clip, first human caption, BLEU-4 against
    all of them) of the caption table."""
    return [
        [stim, text or "-", blip.get(stim) or "-", first_of(humans.get(stim) or []), format_value(None if bleu is None else float(bleu[i]), 2)]
        for i, (stim, text) in enumerate(zip(stimuli, decoded, strict=True))
    ]


def caption_header(label: str) -> list[str]:
    """Header of the caption table; label: what the reconstruction's captions are (``evaluation_data.caption_label``)."""
    return ["clip", f"caption ({label})", "BLIP caption of the watched clip", "human caption", "BLEU-4 (all human captions)"]


def metrics_markdown(result: dict[str, Any], random_models: bool = False, captions: tuple[list[str], list[list[str]]] | None = None) -> str:
    """``metrics.md``: title, method and protocol, the notes, the summary table, the oracle table, the protocol card,
    regression numbers and the caption table ``captions`` (header, rows)."""
    not_measured = not_measured_text(result.get("preset", "")) if random_models else None
    parts = [f"# Evaluation of `{result['run']}` ({result['dataset']}, {result['n_clips']} clips)\n"]
    if result.get("protocol"):
        parts.append(f"{method_line(result)}\n")
    parts += [f"> {text}\n" for text in report_notes(result, random_models).values()]
    parts.append(markdown_table(SUMMARY_HEADER, summary_rows(result["metrics"], not_measured)))
    if result.get("skipped"):
        parts.append("\nNot computed: " + "; ".join(f"`{k}` ({v})" for k, v in result["skipped"].items()) + "\n")
    if result.get("oracles") or result.get("oracles_missing"):
        parts.append(f"\n## {ORACLE_TITLE}\n\n{ORACLE_INTRO}\n")
        if result.get("oracles"):
            parts.append(markdown_table(*oracle_rows(result["oracles"], random_models)))
        parts += [f"\n{line}\n" for line in oracle_notes(result, random_models)]
    if result.get("protocol"):
        parts.append("\n## Protocol card\n\n" + markdown_table(PROTOCOL_HEADER, protocol_rows(result["protocol"])))
    if result.get("regression"):
        parts.append("\n## Regression (from predictions/<run>/metrics.json)\n\n")
        parts.append(markdown_table(*regression_rows(result["regression"])))
    if captions is not None:
        parts.append(f"\n## {CAPTION_TITLE}\n\n" + markdown_table(*captions))
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


def plot_group_bars(panels: Sequence[BarPanel], path: str | Path) -> Path:
    """The per-subject figure -> PNG: one panel per ``BarPanel`` (``utils.scoring.subject_groups``), one group of
    bars per test subject or run along its x axis, a bar per series (legend when several), mean +- SEM, the chance
    level dashed and a mismatched baseline as a black tick over its bar."""
    plt = _pyplot()
    n_cols = min(3, max(1, len(panels)))
    n_rows = max(1, math.ceil(len(panels) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.4 * n_cols, 3.0 * n_rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        labels = list(panel.groups)
        series = list(dict.fromkeys(name for bars in panel.groups.values() for name in bars))
        width = 0.8 / len(series)
        for j, name in enumerate(series):
            offset = (j - (len(series) - 1) / 2) * width
            present = [(i, panel.groups[g][name]) for i, g in enumerate(labels) if name in panel.groups[g]]
            xs = [i + offset for i, _ in present]
            ax.bar(xs, [v[0] for _, v in present], width * 0.9, yerr=[v[1] for _, v in present], capsize=3,
                   color=colors[j % len(colors)], label=name if len(series) > 1 else None)
        ticks = [(i, panel.baselines[g]) for i, g in enumerate(labels) if g in panel.baselines]
        if ticks:
            ax.hlines([v for _, v in ticks], [i - 0.4 for i, _ in ticks], [i + 0.4 for i, _ in ticks], color="k", linewidth=2, label="mismatched")
        if panel.chance is not None:
            ax.axhline(panel.chance, color="k", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel(panel.axis, fontsize=8)
        ax.set_title(panel.title, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        tops = [m + e for bars in panel.groups.values() for m, e in bars.values()] + list(panel.baselines.values())
        tops += [panel.chance] if panel.chance is not None else []
        finite = [t for t in tops if np.isfinite(t)]
        if finite and max(finite) > 0:
            ax.set_ylim(top=1.35 * max(finite))  # room for the legend above the bars
        if len(series) > 1 or panel.baselines or panel.chance is not None:
            ax.legend(fontsize=7, loc="upper center", ncol=4, frameon=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no per-subject numbers", ha="center", va="center")
    fig.tight_layout()
    return _save(fig, Path(path))


def frame_strip(clip: np.ndarray, n_frames: int = 5, gap: int = 2) -> np.ndarray:
    """``n_frames`` evenly spaced frames of a uint8 clip (T, H, W, 3) side by side, white ``gap`` px between them:
    uint8 (H, n * (W + gap) - gap, 3)."""
    from utils.video import sample_indices

    frames = [clip[i] for i in sample_indices(len(clip), n_frames)]
    white = np.full((clip.shape[1], gap, 3), 255, np.uint8)
    return np.concatenate([part for frame in frames for part in (frame, white)][:-1], axis=1)


def plot_examples(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path, n_frames: int = 5) -> Path:
    """Frame strips: for each (name, ground truth (T,H,W,3), reconstruction (T,H,W,3)) two rows -> PNG."""
    plt = _pyplot()
    fig, axes = plt.subplots(2 * len(pairs), 1, figsize=(1.4 * n_frames, 1.6 * 2 * len(pairs)), squeeze=False)
    for row, (name, true, pred) in enumerate(pairs):
        for label, clip, ax in (("ground truth", true, axes[2 * row, 0]), ("reconstruction", pred, axes[2 * row + 1, 0])):
            ax.imshow(frame_strip(clip, n_frames))
            ax.axis("off")
            ax.set_title(f"{name}: {label}", fontsize=8, loc="left")
    fig.tight_layout()
    return _save(fig, Path(path))


# ---------------------------------------------------------------------------------- html

SYNTHETIC_NOTE = (
    "SYNTHETIC DEMO DATA: the videos are procedurally generated and the fMRI is simulated from a known "
    "encoding model. These numbers show that the pipeline carries information end to end; they are not "
    "results on real brains."
)
TINY_NOTE = (
    "Models: the 'tiny' preset (small random-weight networks built offline). The metrics computed with a model "
    "(classifiers, CLIP) then only test the machinery, so the tables say 'not a measurement' instead of a score; "
    "pixel metrics (SSIM, PSNR) and BLEU keep their numbers. Use --preset demo (models fitted to the synthetic world) "
    "or --preset default (the real models) for measurements."
)
DEMO_NOTE = (
    "Models: the 'demo' preset, the real models' classes at small sizes with weights fitted by this project to this "
    "simulated world (its training clips only). Its numbers are measurements inside the simulated world: they prove "
    "the pipeline carries information from the simulated brain to the video, not how well real brains can be decoded."
)
ORACLE_TITLE = "Where information is lost"
CAPTION_TITLE = "Decoded and true captions of the test clips"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f0f0f0}.note{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em;margin:.8em 0}
.clip{display:inline-block;vertical-align:top;margin:6px;padding:6px;border:1px solid #ddd;width:330px;font-size:12px}
.clip video,.clip img.media{width:150px;height:150px;object-fit:contain;background:#000}
.pair{display:flex;gap:6px}.pair figure{margin:0;text-align:center}
.caption{margin:4px 0;padding:2px 5px;border-left:3px solid #ccc}.caption .label{display:block;font-size:11px;color:#555;font-weight:bold}
.caption.decoded{border-color:#4c72b0;background:#eef3fb}.caption.true{border-color:#55a868;background:#f0f7f1}
.caption ol{margin:0;padding-left:1.4em}
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


def _caption_html(css: str, label: str, body: str) -> str:
    return f'<div class="caption {css}"><span class="label">{html.escape(label)}</span>{body}</div>'


def clip_card(
    stimulus: str, true_src: str, pred_src: str, human: Sequence[str], decoded: str | None, scores: dict[str, float],
    decoded_label: str = "decoded caption", blip: str | None = None,
) -> str:
    """One gallery cell: ground truth beside reconstruction, then the reconstruction's caption (``decoded``, what it is
    in ``decoded_label``), BLIP's caption of the watched clip and every human caption, each labelled; per-clip scores."""
    captions = ""
    if decoded is not None:
        captions += _caption_html("decoded", f"caption ({decoded_label})", html.escape(decoded))
    if blip:
        captions += _caption_html("true", "BLIP caption of the watched clip", html.escape(blip))
    if human:
        items = "".join(f"<li>{html.escape(text)}</li>" for text in human)
        captions += _caption_html("true", f"human caption{'s' if len(human) > 1 else ''} of the watched clip", f"<ol>{items}</ol>")
    score_text = ", ".join(f"{k} {format_value(v, 2)}" for k, v in scores.items())
    return (
        f'<div class="clip" data-stimulus="{html.escape(stimulus, quote=True)}"><div><b>{html.escape(stimulus)}</b></div>'
        f'<div class="pair">{_video_tag(true_src, "ground truth")}{_video_tag(pred_src, "reconstruction")}</div>'
        f'{captions}<div class="scores">{html.escape(score_text)}</div></div>'
    )


def render_report(
    result: dict[str, Any], cards: Sequence[str], figures: dict[str, str], random_models: bool = False,
    captions: tuple[list[str], list[list[str]]] | None = None,
) -> str:
    """The whole ``report.html`` text.

    result: what goes to metrics.json; cards: from ``clip_card``; figures: ``{title: src}``;
    random_models: the model-based metrics say "not a measurement" instead of a score, with a note;
    captions: (header, rows) of the caption table (``caption_rows``), or None.
    """
    title = f"brain2video evaluation: {result['run']} ({result['dataset']})"
    not_measured = not_measured_text(result.get("preset", "")) if random_models else None
    notes = []
    protocol_html = ""
    if result.get("protocol"):
        notes.append(f'<p id="method-protocol"><b>{html.escape(method_line(result))}</b></p>')
        protocol_html = "<h2>Protocol card</h2>" + _table_html(PROTOCOL_HEADER, protocol_rows(result["protocol"]), "protocol-card")
    notes += [f'<div class="note" id="{key}">{html.escape(text)}</div>' for key, text in report_notes(result, random_models).items()]
    skipped = ""
    if result.get("skipped"):
        skipped = "<p>Not computed: " + "; ".join(f"<code>{html.escape(k)}</code> ({html.escape(v)})" for k, v in result["skipped"].items()) + "</p>"
    oracle_html = ""
    if result.get("oracles") or result.get("oracles_missing"):
        table = _table_html(*oracle_rows(result["oracles"], random_models), "oracle-table") if result.get("oracles") else ""
        lines = "".join(f"<p>{html.escape(line)}</p>" for line in oracle_notes(result, random_models))
        oracle_html = f"<h2>{ORACLE_TITLE}</h2><p>{html.escape(ORACLE_INTRO)}</p>{table}{lines}"
    regression_html = ""
    if result.get("regression"):
        header, rows = regression_rows(result["regression"])
        regression_html = "<h2>Regression (test predictions vs targets)</h2>" + _table_html(header, rows, "regression-table")
    caption_html = f"<h2>{CAPTION_TITLE}</h2>" + _table_html(*captions, "caption-table") if captions is not None else ""
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
        "<h2>Metrics</h2>" + _table_html(SUMMARY_HEADER, summary_rows(result["metrics"], not_measured), "metrics-table") + skipped
        + oracle_html + protocol_html + regression_html + "<h2>Figures</h2>" + figure_html + caption_html
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
    (``models.zoo.has_random_weights``): their metrics say "not a measurement" instead of a score.
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
    among them); humans: human captions per stimulus; media: the gallery clips; caption_label:
    what the run's captions are (``evaluation_data.caption_label``); blip: BLIP's caption of
    each watched clip.
    """

    result: dict[str, Any]
    stimuli: list[str]
    columns: dict[str, np.ndarray]
    text: dict[str, list[str]]
    humans: dict[str, list[str]]
    media: list[ClipMedia]
    caption_label: str = "decoded caption"
    blip: dict[str, str] = field(default_factory=dict)


def caption_table(evaluation: RunEvaluation) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows) of the caption table of a run, or None when its clips have no caption."""
    decoded = evaluation.text.get("decoded_caption") or []
    if not any(decoded):
        return None
    rows = caption_rows(evaluation.stimuli, decoded, evaluation.blip, evaluation.humans, evaluation.columns.get("caption_bleu4"))
    return caption_header(evaluation.caption_label), rows


def write_evaluation(
    out_dir: str | Path, evaluation: RunEvaluation, panels: Sequence[BarPanel],
    settings: ReportSettings, card_scores: Callable[[dict[str, np.ndarray], int], dict[str, float]],
) -> Path:
    """metrics.md, per_sample.csv, figures, media, report.html and, last, metrics.json of one run.

    panels: the per-subject figure (``utils.scoring.subject_groups``); card_scores(columns, i):
    the numbers shown on clip i's card. With random-weight models (``settings.random_models``)
    the model-based metrics are left out of the figures and cards and say "not a measurement"
    in the tables. metrics.json is written last: its inputs fingerprint marks the run complete
    for evaluate.py's resume check.
    """
    out_dir = Path(out_dir)
    result, columns, text = evaluation.result, evaluation.columns, evaluation.text
    captions = caption_table(evaluation)
    write_text(layout.metrics_markdown_path(out_dir), metrics_markdown(result, settings.random_models, captions))
    write_per_sample_csv(layout.per_sample_path(out_dir), evaluation.stimuli, columns, extra=text)

    measured = {k: v for k, v in columns.items() if not (settings.random_models and is_model_based(k))}
    chance = {k: v["chance"] for k, v in result["metrics"].items()}
    examples = [(m.stimulus, m.true, m.pred) for m in evaluation.media[: settings.n_examples]]
    figures = {
        "Per-clip distributions": plot_distributions(measured, chance, layout.figure_path(out_dir, "distributions")),
        "Per test subject and per run (mean +- SEM)": plot_group_bars(panels, layout.figure_path(out_dir, "per_subject")),
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
        cards.append(clip_card(
            clip.stimulus, sources["gt"], sources["recon"], evaluation.humans.get(clip.stimulus, []), decoded, card_scores(measured, i),
            evaluation.caption_label, evaluation.blip.get(clip.stimulus),
        ))
    write_text(layout.report_path(out_dir), render_report(result, cards, figure_src, settings.random_models, captions))
    write_json(layout.metrics_path(out_dir), result)
    return out_dir
