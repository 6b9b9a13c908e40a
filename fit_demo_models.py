"""Stage 0b: fit the demo preset's models to the synthetic world (the demo only; see models/demo/).

The demo preset (``--preset demo``) uses the same classes as the real models - AutoencoderKL,
UNet3DConditionModel, CLIPTextModel + tokenizer and DPMSolverMultistepScheduler (Zeroscope),
BlipForConditionalGeneration + processor, CLIPModel, ViTForImageClassification and
VideoMAEForVideoClassification - at small sizes, with weights fitted here on the TRAIN-split
clips of the synthetic demo only (every tenth of them held out for the fit metrics; test clips
are never read). Each model is written in the Hugging Face ``save_pretrained`` layout under
``<data root>/models_demo/`` and every stage loads it with ``from_pretrained``, as it loads real
weights from ``--model-path``. Steps (models/demo/fit.py): vae, clip, zeroscope (the UNet, with
the fitted CLIP's text tower as its text encoder), blip, image_classifier, video_classifier.

Each step trains in ``checkpoints/demo_fit/<step>/`` (progress bars, log.csv; a killed fit
resumes exactly on the next run) and writes ``models_demo/fit_<step>.json`` last: its settings
and its metrics on the held-out train clips. A rerun skips the steps that are done; a step
recorded with other settings is refused unless ``--overwrite``. CPU by default (the fitted
weights are then bit-identical on every run); ``--device cuda`` fits on a GPU. With ``--jobs N``
(default: one per CPU core) independent steps fit side by side in N processes, each on one
thread, a step starting once the steps it needs are done (zeroscope needs vae and clip); each
process writes its step's progress to ``checkpoints/demo_fit/<step>.log``.

These models know only the synthetic world: the demo's numbers show that the pipeline carries
information from (simulated) brain activity to videos, not how well real brains decode.

Examples:
    python download_data.py --dataset demo && python fit_demo_models.py
    python fit_demo_models.py --steps blip --overwrite          # refit one model
    python fit_demo_models.py --data-root /tmp/demo --device cuda
"""
from __future__ import annotations

import argparse

from models.demo.fit import BUDGETS, STEPS, fit_all, step_record
from models.demo.shipped import SHIPPED_DIR, install_shipped, is_installed, ship
from utils import layout
from utils.cli import DEFAULT_DATA_ROOT, nonnegative_int, parse_args, positive_float, positive_int, resolve_processes, run_main
from utils.datasets import DATASETS, get_spec
from utils.io import git_commit
from utils.locks import run_lock
from utils.seeds import seed_everything

STAGE = "fit_demo_models"


def build_parser() -> argparse.ArgumentParser:
    """This stage's flags (it loads no preset and reads no brain data)."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", default=None, metavar="FILE.yaml",
        help="YAML file of flag values by flag name; flags on the command line win (default: none)",
    )
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="root of every artifact (default: %(default)s)")
    synthetic = sorted(name for name, spec in DATASETS.items() if spec.synthetic)
    parser.add_argument("--dataset", default="demo", choices=synthetic, help="the synthetic dataset to fit to (default: %(default)s)")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS), metavar="STEP",
                        help=f"fit steps to run, in their order; any of {list(STEPS)} (default: all)")
    parser.add_argument("--device", default="cpu", help="torch device of the fits: cpu or cuda (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every fit (default: %(default)s)")
    parser.add_argument("--held-out-every", type=positive_int, default=10,
                        help="keep every N-th train clip out of the fits, for the held-out fit metrics (default: %(default)s)")
    parser.add_argument("--epoch-scale", type=positive_float, default=1.0,
                        help="multiply every step's epochs by this (at least 1 epoch), e.g. 0.25 for a quick look; recorded in each "
                        "fit_<step>.json (default: %(default)s)")
    parser.add_argument("--budget", default="quick", choices=sorted(BUDGETS),
                        help="fit budget: 'quick' fits the demo in a few CPU minutes, 'full' scales each step's epochs by its "
                        "factor in models/demo/fit.py BUDGETS (about an hour of CPU; the shipped demo_models/ were fitted so) "
                        "(default: %(default)s)")
    parser.add_argument("--jobs", type=nonnegative_int, default=0,
                        help="worker processes fitting independent steps side by side, each on one thread (the weights are the "
                        "same as one after another); 0 = one per usable CPU core on the CPU, 1 on a GPU (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="fit the selected steps again, replacing their models")
    parser.add_argument("--from-shipped", action="store_true",
                        help="use the fitted models shipped in demo_models/ when they were fitted to a demo world of the same "
                        "settings as this data root's (files checked against their sha256); otherwise fit (run_pipeline.py "
                        "passes it unless --refit-demo)")
    parser.add_argument("--ship", action="store_true",
                        help="after fitting, copy the models and their fit records to demo_models/ with a manifest (code "
                        "commit, budget, demo settings, sha256 of every file), replacing what is shipped")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of every error (default: one line for expected errors)")
    return parser


def use_shipped(data_root: str) -> str | None:
    """Keep or install the shipped demo models under ``data_root`` (what was done, for the console); None when they do not
    apply: models fitted here earlier are kept, and a demo world of other settings is fitted."""
    if is_installed(data_root) is not None:
        return f"the shipped demo models are installed under {layout.demo_models_root(data_root)}, kept"
    if any(step_record(data_root, step) is not None for step in STEPS):
        return None
    manifest = install_shipped(data_root)
    if manifest is None:
        return None
    return (f"installed the shipped demo models ({SHIPPED_DIR.name}/, fitted with --budget {manifest['budget']} at commit "
            f"{manifest['code_commit']}) under {layout.demo_models_root(data_root)}; --refit-demo fits them here instead")


def main(argv: list[str] | None = None) -> int:
    """Fit the selected steps; 0 on success."""
    args = parse_args(build_parser(), argv)
    if not get_spec(args.dataset).synthetic:
        raise ValueError(f"--dataset {args.dataset}: fit_demo_models.py fits models to a synthetic dataset only.")
    seed_everything(args.seed)
    with run_lock(layout.demo_models_root(args.data_root), STAGE):
        shipped = use_shipped(args.data_root) if args.from_shipped else None
        if shipped is not None:
            print(f"[{STAGE}] {shipped}")
            return 0
        records = fit_all(
            args.data_root, args.device, args.seed, args.overwrite, tuple(args.steps), args.held_out_every, args.epoch_scale,
            resolve_processes(args.jobs, args.device), args.budget,
        )
    for step, record in records.items():
        print(f"[{STAGE}] {step}: {record['folder']} ({record['seconds']} s)")
    if args.ship:
        manifest = ship(args.data_root, git_commit() or "unknown", args.budget)
        print(f"[{STAGE}] shipped {len(manifest['files'])} files to {SHIPPED_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
