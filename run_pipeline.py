"""Run every stage in order with one set of flags (default: the offline demo with its fitted demo models).

Stages (each is a script's ``main(argv)``, called in this process; numbered as in the README):
    0   download_data              --dataset demo: synthesise the demo; real datasets: fetch betas + metadata
    0   prepare                    download_data.py --prepare: pickles -> one float32 array per subject
    0b  fit_demo_models            --preset demo only: install the shipped demo models (demo_models/), or fit them (--refit-demo) -> models_demo/
    1b  extract_targets_zeroscope  Zeroscope VAE latents of every stimulus
    1a  extract_targets_blip       BLIP embeddings + captions, CLIP embeddings
    2a  train_mbm                  masked brain modeling pretraining           -> checkpoints/mbm/<run>/
    2b  finetune_contrastive       contrastive alignment to CLIP; embeddings   -> embeddings/<run>_clip/
    3   regress                    embeddings (or betas) -> targets            -> predictions/<run>/
    4   reconstruct_zeroscope      captions + Zeroscope video-to-video         -> reconstructions/<run>/
    4   reconstruct_oracles        the same from ground-truth latents and/or captions (--no-oracles skips):
                                   reconstructions/<run>_z-gt_caption-gt, <run>_z-gt_caption-pred, <run>_z-pred_caption-gt
    5   evaluate                   metrics, figures, report.html of the run and its oracles -> evaluation/<run>/

Every stage skips work whose outputs are complete (``--overwrite`` redoes it), so a rerun
after an interruption continues where it stopped (an interrupted training run is resumed).
The common flags (utils/cli.py: --data-root, --dataset, --subjects, --roi-set, --preset,
--device, --dtype, --batch-size, --seed, --overwrite, --limit) go to every stage that has
them; the ones you do not give are left to each stage's own default. ``--config FILE.yaml``
sets the runner's flags by name. The preset is ``demo`` on synthetic data (models fitted to
the synthetic world by fit_demo_models.py, loaded from models_demo/ like real weights) and
``default`` (the real models) otherwise; ``--preset tiny`` (random models, for tests) takes a few
settings that keep the whole run within a minute on a 2-core CPU (``DEMO_FAST`` below: short
MBM/contrastive training on repeat-averaged inputs, 2 denoising steps). ``DEMO_PRESET`` holds the
demo preset's own settings (short MBM/contrastive training, 10 sampling steps and guidance 5 at the
default strength), printed when they apply. ``--stage-args STAGE="..."`` adds or overrides flags of
one stage.

The run name (``--run``, default ``<dataset>_<preset>[_<subjects>]``) names the MBM
checkpoint, the contrastive run (``<run>_clip``), the predictions, the reconstructions and
the evaluation. At the end it prints a summary per stage, the report's path and the
headline numbers.

Examples:
    python run_pipeline.py                                          # the demo: fit its models, run every stage
    python run_pipeline.py --preset tiny                            # random tiny models: the fast code path
    python run_pipeline.py --from-stage regress                     # redo from regression on
    python run_pipeline.py --stages regress reconstruct_zeroscope evaluate --overwrite
    python run_pipeline.py --stage-args train_mbm="--epochs 20" --data-root /tmp/demo
    python run_pipeline.py --dataset bmd --preset default --subjects 1 --device cuda
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import resource
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models import training, zoo
from models.regressors import REGRESSORS
from utils import evaluation_data, layout, scoring
from utils.cli import common_parser, error_line, is_expected_error, parse_args, run_main, run_name
from utils.datasets import check_subjects, get_spec, subject_folder
from utils.io import read_json
from utils.regression_data import RegressionSettings

# Stages whose training runs can be interrupted and resumed, and their checkpoints/<folder>/.
TRAINING_STAGES = {"train_mbm": "mbm", "finetune_contrastive": "contrastive"}
STAGES = (
    "download_data", "prepare", "fit_demo_models", "extract_targets_zeroscope", "extract_targets_blip", "train_mbm",
    "finetune_contrastive", "regress", "reconstruct_zeroscope", "reconstruct_oracles", "evaluate",
)
# Script (module) behind each stage.
MODULES = {stage: stage for stage in STAGES} | {"prepare": "download_data", "reconstruct_oracles": "reconstruct_zeroscope"}
# Common flags (utils.cli.common_parser) handed to every stage that has them, when given.
PASS_THROUGH = ("subjects", "roi_set", "device", "dtype", "batch_size", "seed", "limit")
# Settings that keep the tiny-preset demo fast on a 2-core CPU (applied only there).
DEMO_FAST = {
    "train_mbm": ["--epochs", "2", "--input", "averaged"],
    "finetune_contrastive": ["--epochs", "3", "--train-input", "averaged"],
    "reconstruct_zeroscope": ["--steps", "4", "--strength", "0.5"],
    "reconstruct_oracles": ["--steps", "4", "--strength", "0.5"],
}
DEMO_WHY = (
    "tiny-preset demo settings: 2 MBM and 3 contrastive epochs on repeat-averaged inputs; 2 denoising steps (--steps 4 --strength 0.5)"
)
# The numbers the summary prints for the run (its oracles: the first four).
HEADLINE = ("ssim", "clip_2way_identification", "video_50way", "caption_2way_retrieval", "psnr", "image_50way")
# The demo preset's settings on the synthetic demo (applied only there; --stage-args still win).
DEMO_RECONSTRUCT = ["--steps", "10", "--guidance-scale", "5"]
DEMO_PRESET = {
    **{stage: DEMO_FAST[stage] for stage in ("train_mbm", "finetune_contrastive")},
    "reconstruct_zeroscope": DEMO_RECONSTRUCT, "reconstruct_oracles": DEMO_RECONSTRUCT,
}
DEMO_PRESET_WHY = (
    "demo-preset settings: 2 MBM and 3 contrastive epochs on repeat-averaged inputs (the full schedules take tens of minutes "
    "on a CPU); reconstruction at the default strength 0.8 with 10 DPM-Solver steps (8 run; the same held-out SSIM as 20) "
    "and guidance 5 (guidance 15 amplifies the errors of a UNet fitted for a few CPU minutes; bench/results_demo.md)"
)


@dataclass
class StageResult:
    """What one stage did."""

    stage: str
    status: str  # "ran", "failed", "not run"
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    argv: tuple[str, ...] = ()
    error: str = ""


def build_parser() -> argparse.ArgumentParser:
    """The common stage flags (utils.cli.common_parser) plus the runner's own.

    Common flags default to None here: a flag not given is left to each stage's own default,
    and a flag given goes to every stage that has it.
    """
    parser = common_parser(__doc__, presets=zoo.PRESETS, roi_set=True)
    parser.set_defaults(**dict.fromkeys(PASS_THROUGH, None), preset=None)
    for action in parser._actions:
        if action.dest in PASS_THROUGH and action.help:
            action.help = action.help.split(" (default:")[0] + " (default: each stage's own)"
        elif action.dest == "preset":
            action.help = "model preset for every stage that loads models (default: tiny on synthetic data, default = the real models otherwise)"
    parser.add_argument("--run", type=run_name, default=None, help="run name (default: <dataset>_<preset>[_<subjects>])")
    parser.add_argument("--stages", nargs="+", default=None, choices=STAGES, metavar="STAGE", help=f"run only these stages, in pipeline order; any of {list(STAGES)}")
    parser.add_argument("--from-stage", default=None, choices=STAGES, help="start at this stage (default: the first)")
    parser.add_argument(
        "--regress-input", default="embeddings", choices=("embeddings", "betas"),
        help="what regress.py reads: the contrastive encoder's embeddings or the prepared betas (default: %(default)s)",
    )
    parser.add_argument("--targets", nargs="+", default=list(RegressionSettings.targets), help="regression targets (default: %(default)s)")
    parser.add_argument("--regressor", default=RegressionSettings.regressor, choices=sorted(REGRESSORS), help="regression model (default: %(default)s)")
    parser.add_argument(
        "--stage-args", nargs="+", default=[], metavar="STAGE=ARGS",
        help='extra flags for one stage, e.g. train_mbm="--epochs 20" (they come last, so they win)',
    )
    parser.add_argument("--demo-fast", action=argparse.BooleanOptionalAction, default=True, help=f"on the tiny demo, use the {DEMO_WHY}")
    parser.add_argument(
        "--oracles", action=argparse.BooleanOptionalAction, default=True,
        help="also reconstruct from ground-truth latents and/or captions (<run>_z-gt_caption-gt, <run>_z-gt_caption-pred, "
        "<run>_z-pred_caption-gt) and evaluate them, so the report shows where information is lost",
    )
    parser.add_argument(
        "--refit-demo", action="store_true",
        help="with --preset demo: fit the demo models on this machine (fit_demo_models.py, quick budget) instead of installing "
        "the ones shipped in demo_models/ (fitted with --budget full); a data root that already has fitted models keeps them "
        "unless --overwrite",
    )
    parser.add_argument("--isolate", action="store_true", help="run each stage in its own Python process (separate peak-RAM figures)")
    parser.add_argument("--keep-going", action="store_true", help="continue with the next stages after a failure")
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on other flags (preset, run name, stage list)."""
    spec = get_spec(args.dataset)
    args.data_root = str(Path(args.data_root).resolve())  # stages in child processes (--isolate) run from the repo
    if args.preset is None:
        args.preset = zoo.default_preset(spec.synthetic)
    if args.run is None:
        args.run = default_run(args.dataset, args.preset, args.subjects)
    extras: dict[str, list[str]] = {}
    for item in args.stage_args:
        stage, sep, text = item.partition("=")
        if not sep or stage not in STAGES:
            raise ValueError(f"--stage-args {item!r}: expected STAGE=ARGS with STAGE one of {list(STAGES)}.")
        extras[stage] = extras.get(stage, []) + shlex.split(text)
    args.extras = extras
    selected = list(args.stages or STAGES)
    if args.from_stage:
        selected = [s for s in selected if STAGES.index(s) >= STAGES.index(args.from_stage)]
    args.selected = [s for s in STAGES if s in selected and applies(s, args)]
    return args


def applies(stage: str, args: argparse.Namespace) -> bool:
    """Whether a stage belongs to this run: the demo fit only with --preset demo on synthetic data,
    the oracle reconstructions unless --no-oracles."""
    if stage == "fit_demo_models":
        return demo_preset(args)
    if stage == "reconstruct_oracles":
        return args.oracles
    return True


def oracles(args: argparse.Namespace) -> dict[str, list[str]]:
    """``{output run: its reconstruct_zeroscope.py flags}`` of this run's oracle reconstructions (the names the report
    looks for first, ``utils.evaluation_data.oracle_run_names``): the sources, and strength 0 for the decode-only
    baselines; empty with --no-oracles."""
    if not args.oracles:
        return {}
    names = evaluation_data.oracle_run_names(args.run, args.dataset)
    out = {}
    for variant in evaluation_data.ORACLE_VARIANTS[:-1]:  # the last is the full prediction itself
        z_from, caption_from = evaluation_data.ORACLE_SOURCES[variant]
        strength = ["--strength", "0"] if variant in evaluation_data.DECODE_ONLY else []
        out[names[variant][0]] = ["--z-from", z_from, "--caption-from", caption_from, *strength]
    return out


def oracle_runs(args: argparse.Namespace) -> list[str]:
    """The oracle reconstruction runs of this pipeline run (empty with --no-oracles)."""
    return list(oracles(args))


def default_run(dataset: str, preset: str | None = None, subjects: list[str] | None = None) -> str:
    """The run name the runner uses unless ``--run``: ``<dataset>_<preset>[_<subjects>]`` (preset: the dataset's default);
    a subject list too long for a folder name becomes ``<n>subjects-<digest>``."""
    spec = get_spec(dataset)
    preset = preset or zoo.default_preset(spec.synthetic)
    folders = [subject_folder(s) for s in check_subjects(spec, subjects)] if subjects else []
    name = f"{dataset}_{preset}" + ("_" + "-".join(folders) if folders else "")
    if len(name) > layout.MAX_NAME_LENGTH:
        digest = hashlib.sha256("-".join(folders).encode()).hexdigest()[:8]
        name = f"{dataset}_{preset}_{len(folders)}subjects-{digest}"
    return name


def stage_options(stage: str) -> set[str]:
    """Every option string the stage's own parser accepts (``--preset``, ``--roi-set``, ...)."""
    parser = importlib.import_module(MODULES[stage]).build_parser()
    return {option for action in parser._actions for option in action.option_strings}


def common_argv(args: argparse.Namespace, options: set[str]) -> list[str]:
    """The common flags for one stage: data root, dataset, preset, the pass-through flags given and
    --overwrite, each only when the stage's parser has it."""
    argv = ["--data-root", args.data_root, "--dataset", args.dataset]
    for name in ("preset", *PASS_THROUGH, "overwrite", "debug"):
        flag, value = "--" + name.replace("_", "-"), getattr(args, name)
        if flag not in options or value is None or value is False:
            continue
        argv += [flag] if value is True else [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return argv


def stage_argv(stage: str, args: argparse.Namespace) -> list[str]:
    """The full argv of one stage."""
    own = {
        "download_data": [],
        "prepare": ["--prepare"],
        "fit_demo_models": [] if args.refit_demo else ["--from-shipped"],
        "extract_targets_zeroscope": ["--no-progress"],
        "extract_targets_blip": ["--no-progress"],
        "train_mbm": ["--run", args.run],
        "finetune_contrastive": ["--run", contrastive_run(args), "--mbm", args.run],
        "regress": ["--run", args.run, "--targets", *args.targets, "--regressor", args.regressor, "--input", args.regress_input]
        + (["--embeddings-run", contrastive_run(args)] if args.regress_input == "embeddings" else []),
        "reconstruct_zeroscope": ["--run", args.run],
        "reconstruct_oracles": ["--run", args.run],
        "evaluate": ["--reconstructions", args.run, *oracle_runs(args)],
    }[stage]
    if stage in TRAINING_STAGES and not args.overwrite:
        run = args.run if stage == "train_mbm" else contrastive_run(args)
        if training.run_status(layout.checkpoint_dir(args.data_root, TRAINING_STAGES[stage], run)) == "interrupted":
            own.append("--resume")
    fast = DEMO_FAST.get(stage, []) if demo_fast(args) else DEMO_PRESET.get(stage, []) if demo_preset(args) else []
    return common_argv(args, stage_options(stage)) + own + fast + args.extras.get(stage, [])


def stage_argvs(stage: str, args: argparse.Namespace) -> list[list[str]]:
    """Every call of one stage: one argv, or one per oracle for ``reconstruct_oracles``."""
    argv = stage_argv(stage, args)
    if stage != "reconstruct_oracles":
        return [argv]
    return [argv + [*flags, "--output-run", run] for run, flags in oracles(args).items()]


def contrastive_run(args: argparse.Namespace) -> str:
    """Name of the contrastive run (and of its embeddings) of a pipeline run."""
    return f"{args.run}_clip"


def demo_fast(args: argparse.Namespace) -> bool:
    """True when the runner's fast demo settings apply: synthetic data with random-weight models."""
    return args.demo_fast and get_spec(args.dataset).synthetic and zoo.has_random_weights(args.preset)


def demo_preset(args: argparse.Namespace) -> bool:
    """True when the demo preset's own settings apply: --preset demo on synthetic data."""
    return args.preset == "demo" and get_spec(args.dataset).synthetic


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def run_in_process(module: str, argv: list[str]) -> int:
    """Import a stage script and call its ``main(argv)``; its argparse errors (bad ``--stage-args``) and
    ``--help`` end the stage with their exit status, naming the stage's own script, not the runner."""
    main: Callable[[list[str]], int] = importlib.import_module(module).main
    runner_name, sys.argv[0] = sys.argv[0], f"{module}.py"  # argparse names the program after sys.argv[0]
    try:
        return int(main(argv) or 0)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.argv[0] = runner_name


def run_isolated(module: str, argv: list[str]) -> tuple[int, float]:
    """Run ``main(argv)`` of a stage in a child Python process -> (exit code, the child's peak RSS in MiB).

    The child reports its own ``VmHWM`` (peak RSS of its address space, which starts fresh at
    exec) so that the runner's memory does not count; ``ru_maxrss`` would include it.
    """
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "peak_kib"
        code = (
            f"import sys, re, pathlib; sys.argv[0] = '{module}.py'; import {module} as stage\n"
            "try:\n    code = stage.main(sys.argv[1:])\n"
            "finally:\n"
            "    status = pathlib.Path('/proc/self/status')\n"
            "    found = re.search(r'VmHWM:\\s+(\\d+)', status.read_text()) if status.exists() else None\n"
            f"    pathlib.Path({str(report)!r}).write_text(found.group(1) if found else '0')\n"
            "sys.exit(code)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=Path(__file__).resolve().parent, env=dict(os.environ))
        peak = int(report.read_text()) / 1024 if report.exists() else 0.0
    return proc.returncode, peak


def run_stage(stage: str, args: argparse.Namespace) -> StageResult:
    """Run one stage (each of its calls in turn); never raises (the error goes in the result)."""
    start, peak, argv = time.perf_counter(), 0.0, []
    for argv in stage_argvs(stage, args):
        print(f"\n[pipeline] === {stage}: python {MODULES[stage]}.py {shlex.join(argv)}", flush=True)
        try:
            if args.isolate:
                code, used = run_isolated(MODULES[stage], argv)
            else:
                code, used = run_in_process(MODULES[stage], argv), peak_rss_mb()
        except Exception as error:  # report every stage failure in the summary, then stop (or go on)
            if args.debug or not is_expected_error(error):
                traceback.print_exc()
            else:
                print(error_line(error), file=sys.stderr)
            return StageResult(stage, "failed", time.perf_counter() - start, peak_rss_mb(), tuple(argv), f"{type(error).__name__}: {error}")
        peak = max(peak, used)
        if code != 0:
            return StageResult(stage, "failed", time.perf_counter() - start, peak, tuple(argv), f"exit status {code}")
    return StageResult(stage, "ran", time.perf_counter() - start, peak, tuple(argv))


def summary_lines(results: list[StageResult], isolate: bool) -> list[str]:
    """Table of stages: status, seconds, peak RSS."""
    rss = "peak RSS (stage)" if isolate else "peak RSS (so far)"
    lines = [f"{'stage':<27} {'status':<8} {'seconds':>8} {rss:>18}"]
    for r in results:
        lines.append(f"{r.stage:<27} {r.status:<8} {r.seconds:>8.1f} {r.peak_rss_mb:>14.0f} MiB" + (f"  {r.error}" if r.error else ""))
    lines.append(f"{'total':<27} {'':<8} {sum(r.seconds for r in results):>8.1f}")
    return lines


def headline(args: argparse.Namespace) -> list[str]:
    """Report path and main numbers from evaluation/<run>/metrics.json and predictions/<run>/metrics.json."""
    lines = []
    out_dir = layout.evaluation_dir(args.data_root, args.run)
    metrics = read_json(layout.metrics_path(out_dir))
    if metrics:
        lines.append(f"report: {layout.report_path(out_dir)}")
        if metrics.get("synthetic"):
            lines.append("(SYNTHETIC demo data: numbers show the pipeline carries information, not real decoding)")
        if zoo.has_random_weights(metrics.get("preset", "default")):
            lines.append("(tiny random models: classifier, CLIP and caption scores only exercise the code, they measure nothing)")
        elif metrics.get("preset") == "demo":
            lines.append("(demo models: small models fitted to the synthetic world's train clips, not the real Zeroscope/BLIP/CLIP)")
        random = zoo.has_random_weights(metrics.get("preset", "default"))
        for name in HEADLINE:
            entry = metrics["metrics"].get(name)
            if entry and random and scoring.is_model_based(name):
                lines.append(f"  {name:<26} random model: not a measurement")
            elif entry:
                lines.append(f"  {name:<26} {entry['mean']:.3f} +- {entry['sem']:.3f}  ({reference(entry)})")
        for run in oracle_runs(args):
            oracle = read_json(layout.metrics_path(layout.evaluation_dir(args.data_root, run)))
            if oracle and not random:
                shown = ", ".join(f"{n} {oracle['metrics'][n]['mean']:.3f}" for n in HEADLINE[:4] if n in oracle["metrics"])
                lines.append(f"  oracle {run}: {shown}")
    for target, two_way in regression_identification(args.data_root, args.run).items():
        lines.append(f"  regression {target:<15} 2-way identification {two_way:.3f} (chance 0.50)")
    return lines


def reference(entry: dict) -> str:
    """``chance 0.50`` or ``mismatched 0.107`` of a metrics.json entry (empty when it has neither)."""
    if entry.get("chance") is not None:
        return f"chance {entry['chance']:.2f}"
    if entry.get("baseline") is not None:
        return f"{entry.get('baseline_label', 'baseline')} {entry['baseline']:.3f}"
    return ""


def regression_identification(data_root: str | Path, run: str) -> dict[str, float]:
    """Mean over test subjects of the 2-way identification of each target, from predictions/<run>/metrics.json."""
    metrics = read_json(layout.regression_metrics_path(data_root, run)) or {}
    out = {}
    for target, entry in (metrics.get("targets") or {}).items():
        values = [s.get("identification", {}).get("2-way") for s in (entry.get("subjects") or {}).values()]
        values = [v for v in values if v is not None]
        if values:
            out[target] = sum(values) / len(values)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the selected stages in order; 0 when all succeeded."""
    args = resolve(parse_args(build_parser(), argv))
    print(f"[pipeline] run {args.run!r}: dataset {args.dataset}, preset {args.preset}, data root {args.data_root}")
    if demo_fast(args):
        print(f"[pipeline] {DEMO_WHY} (--no-demo-fast turns them off)")
    if demo_preset(args):
        print(f"[pipeline] {DEMO_PRESET_WHY}")
    results = []
    for stage in args.selected:
        result = run_stage(stage, args)
        results.append(result)
        if result.status == "failed" and not args.keep_going:
            break
    results += [StageResult(s, "not run") for s in args.selected[len(results):]]
    print("\n[pipeline] summary")
    for line in summary_lines(results, args.isolate) + headline(args):
        print(line)
    return 0 if all(r.status == "ran" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(run_main(main))
