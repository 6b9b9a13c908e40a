"""The command-line layer shared by every stage script.

- ``common_parser``: a flat ``argparse`` parser with the common flags of docs/ARCHITECTURE.md
  (``--data-root --dataset(s) --subjects --preset --device --dtype --batch-size --seed
  --overwrite --limit --config``); scripts add their own flags to it.
- ``parse_args``: parse ``argv`` with a YAML ``--config FILE`` applied first, so flags given
  on the command line win. Every stage script parses through it.
- argparse value types (``positive_int``, ``fraction``, ...), one definition each.
- ``defaults_from``: a stage's flag defaults read from its settings dataclass, so the CLI and
  the library cannot disagree.
- ``resolve_device`` / ``resolve_dtype``: what ``auto`` means.
"""
from __future__ import annotations

import argparse
import dataclasses
import dis
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from utils.datasets import DATASETS
from utils.rois import DEFAULT_ROI_SET

DTYPES = ("auto", "float32", "float16", "bfloat16")
DEFAULT_DATA_ROOT = "data"


# ----------------------------------------------------------------------------- value types


def _number(text: str, kind: type, ok, expected: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    return _number(text, float, lambda v: v > 0, "a number > 0")


def nonnegative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    return _number(text, float, lambda v: v >= 0, "a number >= 0")


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1) (mask ratios, held-out fractions, dropout)."""
    return _number(text, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1] (denoising strength)."""
    return _number(text, float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def run_name(text: str) -> str:
    """argparse type: a run, output-run or method name, one safe folder name (``utils.layout.check_name``)."""
    from utils.layout import check_name

    try:
        return check_name(text, "name")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("name ")) from None


# ----------------------------------------------------------------------------- parsers


def common_parser(
    description: str | None,
    presets: Sequence[str] | None = None,
    multi_dataset: bool = False,
    default_dataset: str = "demo",
    roi_set: bool = False,
) -> argparse.ArgumentParser:
    """A parser with the common flags.

    presets: the model preset names (``models.zoo.PRESETS``); None = the stage loads no model
    and has no ``--preset``. multi_dataset: ``--datasets`` (list, in ``args.datasets``)
    instead of ``--dataset`` (one, in ``args.dataset``); both spellings are accepted.
    roi_set: add ``--roi-set`` for stages that read the prepared betas.
    """
    parser = argparse.ArgumentParser(
        description=description, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default=None, metavar="FILE.yaml",
        help="YAML file of flag values by flag name (e.g. 'batch_size: 16'); flags on the command line win (default: none)",
    )
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="root of every artifact (default: %(default)s)")
    names = sorted(DATASETS)
    if multi_dataset:
        parser.add_argument(
            "--datasets", "--dataset", nargs="+", default=[default_dataset], choices=names, metavar="DS",
            help=f"datasets to use, any of {names} (default: %(default)s)",
        )
    else:
        parser.add_argument(
            "--dataset", "--datasets", default=default_dataset, choices=names,
            help="dataset to use (default: %(default)s)",
        )
    parser.add_argument(
        "--subjects", nargs="+", default=None, metavar="SUB",
        help="subjects as 1, sub01 or sub-01 (default: every subject of the dataset)",
    )
    if roi_set:
        parser.add_argument(
            "--roi-set", default=DEFAULT_ROI_SET,
            help="ROI set of the prepared betas: a named set (Group41) or MMP ROI names joined by '+', e.g. V1+V2+MT "
            "(default: %(default)s)",
        )
    if presets is not None:
        parser.add_argument(
            "--preset", default=presets[0], choices=tuple(presets),
            help="model preset: 'default' = the real models, 'tiny' = small random models built offline (tests), 'demo' = small "
            "models fitted to the synthetic demo world (models_demo/ under --data-root, made by fit_demo_models.py) "
            "(default: %(default)s)",
        )
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1 ... (default: %(default)s)")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPES,
        help="compute dtype; auto = float16 on CUDA, float32 on CPU (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="items per batch (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="redo work whose outputs already exist")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of every error (default: one line for expected errors)")
    parser.add_argument(
        "--limit", type=positive_int, default=None,
        help="process at most this many items (stimuli, trials, batches), for quick tries (default: all)",
    )
    return parser


def defaults_from(settings: Any) -> dict[str, Any]:
    """``{field: default}`` of a settings dataclass (class or instance), for ``parser.set_defaults``
    or for ``default=`` of one flag: the CLI reads its defaults from the library's dataclass."""
    if isinstance(settings, type):
        settings = settings()
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def config_argv(parser: argparse.ArgumentParser, path: str | Path) -> list[str]:
    """Flags from a YAML file, as command-line tokens placed before the real ones (so those win)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config {file}: no such file.")
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"--config {file}: not valid YAML ({error}).") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {file}: expected a mapping of flag names to values, found {type(values).__name__}.")
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "config"):
            actions.setdefault(action.dest, action)
            for option in action.option_strings:
                actions.setdefault(option.lstrip("-").replace("-", "_"), action)
    tokens: list[str] = []
    for key, value in values.items():
        action = actions.get(str(key).replace("-", "_"))
        if action is None:
            known = sorted({a.dest for a in actions.values()})
            raise ValueError(f"--config {file}: unknown key {key!r}. Known keys: {known}.")
        flag = action.option_strings[0]
        if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
            if not isinstance(value, bool):
                raise ValueError(f"--config {file}: {key} must be true or false, got {value!r}.")
            if isinstance(action, argparse.BooleanOptionalAction):
                tokens += [flag if value else f"--no-{flag[2:]}"]
            else:
                tokens += [flag] if value else []
        elif value is None:
            continue
        elif action.nargs in ("+", "*"):
            tokens += [flag] + [str(v) for v in (value if isinstance(value, list) else [value])]
        else:
            tokens += [flag, str(value)]
    return tokens


def parse_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    bundle: tuple[str, Callable[[str], dict[str, Any]]] | None = None,
) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) with the ``--config`` YAML applied first.

    bundle: ``(dest, defaults_of)`` for a flag that switches the defaults of other flags (e.g.
    ``("recipe", lambda name: get_recipe(name).flags())``): after a first parse, the defaults
    of the named flags become ``defaults_of(args.<dest>)``; flags given explicitly still win.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    prefix = config_argv(parser, known.config) if known.config else []
    args = parser.parse_args(prefix + argv)
    if bundle is not None:
        dest, defaults_of = bundle
        dests = {action.dest for action in parser._actions}
        parser.set_defaults(**{k: v for k, v in defaults_of(getattr(args, dest)).items() if k in dests})
        args = parser.parse_args(prefix + argv)
    for flag in ("data_root", "output_root"):
        folder = getattr(args, flag, None)
        if folder == "":
            raise ValueError(f"--{flag.replace('_', '-')} is empty: expected a folder (the default data root is ./data).")
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise ValueError(f"--{flag.replace('_', '-')} {folder} is a file: expected the folder that holds (or will hold) every artifact.")
    return args


# ----------------------------------------------------------------------------- devices


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda[:i]`` is refused (before any work) when
    this machine or this torch build has no such GPU; other names pass through."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                f"{'a CPU-only build' if torch.version.cuda is None else 'no GPU visible'}); use --device cpu or auto."
            )
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible (cuda:0 .. cuda:{torch.cuda.device_count() - 1}).")
    return name


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_processes(requested: int, device: str) -> int:
    """Worker processes of a ``--jobs`` flag: ``requested`` when > 0; 0 (auto) = one per usable core on the
    CPU (each runs one torch thread), one on a GPU."""
    if requested > 0:
        return requested
    return usable_cores() if resolve_device(device) == "cpu" else 1


def check_dtype(name: str, supported: Sequence[str], stage: str) -> None:
    """Refuse a --dtype the stage cannot apply (rather than printing it and running in another)."""
    if name not in supported:
        raise ValueError(f"--dtype {name}: {stage} runs in {' or '.join(supported)} only; use one of those (or auto).")


# The project's own code: an error raised here by an explicit check is an expected one (see ``is_expected_error``).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def is_expected_error(error: BaseException) -> bool:
    """True for the errors a user can act on, which ``run_main`` prints in one line: every ``OSError`` (a missing
    or unreadable file, a full disk, a read-only folder: each names its path), a held run lock, an unsafe
    checkpoint, and a ``ValueError`` (bad input, a corrupt file, refused settings) or ``RuntimeError`` (a non-finite
    training loss, an unfitted regressor) raised by a ``raise`` statement of this project's own checks. One raised
    inside a library or by a failing call (numpy's broadcasting, say) is a bug here: its traceback is shown."""
    from utils.locks import RunLockedError
    from utils.safe_pickle import UnsafePickleError

    if isinstance(error, (OSError, RunLockedError, UnsafePickleError)):
        return True
    if not isinstance(error, (ValueError, RuntimeError)) or error.__traceback__ is None:
        return False
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    raised_in = Path(code.co_filename).resolve()
    if PROJECT_ROOT not in raised_in.parents or "site-packages" in raised_in.parts:
        return False
    instruction = next((i for i in dis.get_instructions(code) if i.offset == tb.tb_lasti), None)
    return instruction is not None and instruction.opname == "RAISE_VARARGS"  # a ``raise`` statement, not a failing call


def error_line(error: BaseException) -> str:
    """``error: <message>`` of an expected error."""
    return f"error: {error}"


def run_main(main: Callable[[], int], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main``: Ctrl-C ends with one line (exit 130), an expected error (``is_expected_error``)
    with ``error: <message>`` (exit 1), and only a bug, or any error with ``--debug``, with a traceback.

    Use as ``raise SystemExit(run_main(main))``; finished outputs are kept, and a rerun resumes.
    """
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        print("\nInterrupted: finished outputs are kept; rerun the same command to continue.", file=sys.stderr)
        return 130
    except Exception as error:
        if debug or not is_expected_error(error):
            raise
        print(error_line(error), file=sys.stderr)
        return 1


def resolve_dtype(name: str, device: str):
    """Torch dtype from the flag: ``auto`` = float16 on CUDA, float32 elsewhere."""
    import torch

    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)
