"""Stage 0: fetch the public data, or synthesise the offline demo; convert pickles to the prepared layout.

Reads / writes (under --data-root, default ./data; paths from utils/layout.py):
- download: betas_cifti_<ds>/subNN/prepared_allvoxel_pkl/Group41<suffix>.pkl (Google Drive; the
  published pickles hold Group41, the spec's pickle_roi_set, whatever --roi-set says),
  metadata_bmd/annotations.json and stimuli_<ds>/... (OpenNeuro S3, Drive for CC2017 clips),
  checkpoints/published/bmd/... (--what checkpoints); per-file sizes and sha256 in
  downloads_manifest.json, checked on every rerun. Partial files are <name>.part and resume.
- --dataset demo: the synthetic demo in BMD formats (utils/synthetic.py), no network.
- --prepare: each subject's pickle -> betas_cifti_<ds>/subNN/<roi_set>.npy (trials x vertices,
  float32) + <roi_set>_trials.csv + <roi_set>_prepared.json (utils/prepare.py); manifest.json.
  --roi-set (default Group41) is a named set or MMP ROIs joined by '+' (V1+V2+MT), whose
  vertices are taken from the pickle's. Trials holding NaN or +-Inf follow --nan-policy; a
  split left empty is warned about. The summary records the settings (ROI set, policy, the
  pickle's size and sha256): a rerun with the same ones skips, with others it refuses (pass
  --overwrite). Every subject is attempted; failures are listed at the end (exit status 1).
  A subject folder is locked while it is converted (a second copy stops; a killed one's lock
  and temporary files are cleaned up by the next run).
- --write-indiv / --from-indiv: prepared layout <-> the original individual-file layout
  betas_cifti_<ds>/subNN/indiv_npys/<roi_set><suffix>/<stim>_rep<k>.npy (utils/indiv.py).

Examples:
    python download_data.py                                   # the demo (default dataset)
    python download_data.py --dataset demo --prepare          # prepare every demo subject
    python download_data.py --dataset bmd --subjects 1 2 --dry-run
    python download_data.py --dataset bmd --subjects 1        # pickle + annotations
    python download_data.py --dataset bmd --what stimuli --accept-stimuli-terms
    python download_data.py --dataset bmd --subjects 1 --prepare --write-indiv
    python download_data.py --dataset demo --prepare --roi-set V1+V2+MT   # a smaller ROI set
    python download_data.py --dataset bmd --subjects 1 --from-indiv   # indiv files -> prepared
"""
from __future__ import annotations

import pickle
import sys

from utils import download, layout
from utils.cli import common_parser, nonnegative_float, parse_args, run_main
from utils.datasets import DatasetSpec, check_subjects, download_command, get_spec, parse_subject
from utils.indiv import indiv_source, write_prepared_from_indiv, write_subject_indiv
from utils.io import write_manifest
from utils.locks import RunLockedError
from utils.prepare import NAN_POLICIES, is_prepared, prepare_subject, source_pickle_path, summary_text
from utils.synthetic import (
    DEMO_FLAGS,
    add_demo_arguments,
    check_demo_subject_flags,
    check_demo_subjects,
    demo_settings,
    make_demo,
)

# Flags of the network download only, and of the conversions only (errors when given elsewhere).
DOWNLOAD_FLAGS = ("what", "retries", "backoff", "verify", "drive_ids", "accept_stimuli_terms", "timeout")
CONVERT_FLAGS = ("nan_policy",)
# What a failed subject conversion raises (an unsafe pickle is a pickle.UnpicklingError).
SUBJECT_ERRORS = (OSError, ValueError, KeyError, pickle.UnpicklingError, RunLockedError)


def build_parser():
    """The common flags plus this stage's own."""
    parser = common_parser(__doc__, roi_set=True)
    parser.add_argument(
        "--what", nargs="+", choices=download.WHAT, default=["betas", "metadata", "stimuli"],
        help="what to download for a real dataset (default: %(default)s)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be fetched or converted; write nothing")
    parser.add_argument("--retries", type=int, default=5, help="extra attempts per file after a network failure (default: %(default)s)")
    parser.add_argument("--backoff", type=nonnegative_float, default=2.0, help="first wait between attempts in seconds, doubled each time (default: %(default)s)")
    parser.add_argument("--verify", choices=("sha256", "size"), default="sha256", help="how files on disk are checked against the manifest (default: %(default)s)")
    parser.add_argument("--drive-ids", default=None, help="JSON file {\"<path in Drive folder>\": \"<file id>\"} for files a truncated listing misses (default: none)")
    parser.add_argument("--accept-stimuli-terms", action="store_true", help="you accepted the BMD stimuli terms of use: fetch the BMD videos from OpenNeuro")
    parser.add_argument("--timeout", type=nonnegative_float, default=60.0, help="network timeout in seconds (default: %(default)s)")
    parser.add_argument("--prepare", action="store_true", help="convert each subject's pickle to the prepared layout (no download)")
    parser.add_argument("--nan-policy", choices=NAN_POLICIES, default="drop", help="trials holding NaN: drop them or zero-fill them (default: %(default)s)")
    parser.add_argument("--write-indiv", action="store_true", help="write the individual-file layout from the prepared layout")
    parser.add_argument("--from-indiv", action="store_true", help="build the prepared layout from existing individual files")
    add_demo_arguments(parser)
    return parser


def subjects_on_disk(data_root: str, spec: DatasetSpec, roi_set: str, need: str) -> list[int]:
    """Subjects whose input for a conversion to ``roi_set`` exists: ``pickle``, ``indiv`` or ``prepared``."""
    base = layout.dataset_betas_dir(data_root, spec.name)
    found = set()
    for folder in sorted(base.glob("sub*")) if base.is_dir() else []:
        try:
            subject = parse_subject(folder.name)
        except ValueError:
            continue
        try:
            if need == "pickle":
                ok = source_pickle_path(data_root, spec, subject).exists()
            elif need == "indiv":
                ok = indiv_source(data_root, spec.name, subject, roi_set)[0].is_dir()
            else:
                ok = is_prepared(data_root, spec.name, subject, roi_set)
        except ValueError:  # two folders of the subject hold data: its conversion names them
            ok = True
        if ok and (spec.synthetic or subject in spec.subjects):
            found.add(subject)
    return sorted(found)


def run_download(args, spec: DatasetSpec) -> int:
    """Plan and fetch a real dataset; print per-file results; 1 if anything failed or is missing."""
    network = download.Network(timeout=args.timeout)
    plan = download.plan_dataset(
        spec.name, args.subjects, network, tuple(args.what),
        drive_ids=download.read_drive_ids(args.drive_ids), known=download.recorded_drive_ids(args.data_root),
        accept_terms=args.accept_stimuli_terms, retries=args.retries, backoff=args.backoff,
    )
    for line in plan.warnings:
        print(f"WARNING: {line}")
    results = download.fetch_all(
        plan, args.data_root, network, retries=args.retries, backoff=args.backoff, verify=args.verify,
        overwrite=args.overwrite, dry_run=args.dry_run, limit=args.limit,
    )
    for result in results:
        print(f"{result.status:>11}  {result.dest}{'  ' + result.message if result.message else ''}")
    for line in plan.manual:
        print(f"BY HAND: {line}")
    for line in plan.missing:
        print(f"MISSING: {line}", file=sys.stderr)
    failed = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("downloaded", "present", "would-fetch", "would-verify", "failed")}
    print(f"{spec.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + (f", {len(plan.missing)} missing" if plan.missing else ""))
    return 1 if failed or plan.missing else 0


def run_demo(args) -> int:
    """Synthesise the demo dataset (every subject of --n-subjects; --subjects, when given, must be among them)."""
    check_demo_subject_flags(args.subjects, args.n_subjects)
    if args.dry_run:
        print(f"would write the demo ({args.n_subjects} subjects, {args.n_train}+{args.n_test} videos) under {args.data_root}")
        return 0
    summary = make_demo(args.data_root, **demo_settings(args), seed=args.seed, overwrite=args.overwrite)
    print(
        f"demo (SYNTHETIC) in {summary['data_root']}: {args.n_train}+{args.n_test} videos "
        f"({summary['videos_written']} written), {args.n_subjects} subject pickles ({summary['pickles_written']} written)"
    )
    return 0


def convert_subject(args, spec: DatasetSpec, subject: int) -> str:
    """Run the requested conversions for one subject; return its report line."""
    lines = []
    if args.from_indiv:
        summary = write_prepared_from_indiv(args.data_root, spec.name, subject, args.roi_set, args.overwrite, args.nan_policy)
        lines.append("from indiv: " + summary_text(summary))
    if args.prepare:
        lines.append(summary_text(prepare_subject(args.data_root, spec.name, subject, args.roi_set, args.overwrite, args.nan_policy)))
    if args.write_indiv:
        counts = write_subject_indiv(args.data_root, spec.name, subject, args.roi_set, overwrite=args.overwrite)
        lines.append(f"indiv: {counts['written']} file(s) written, {counts['skipped']} kept, in {counts['directory']}")
    return "\n".join(lines)


def subject_input(args, spec: DatasetSpec, subject: int) -> str:
    """The input file (or folder) of a subject's conversion, for the list of failures."""
    try:
        if args.from_indiv:
            return str(indiv_source(args.data_root, spec.name, subject, args.roi_set)[0])
        if args.prepare:
            return str(source_pickle_path(args.data_root, spec, subject))
        return str(layout.betas_dir(args.data_root, spec.name, f"sub{subject:02d}"))
    except ValueError:
        return str(layout.dataset_betas_dir(args.data_root, spec.name))


def run_convert(args, spec: DatasetSpec) -> int:
    """Prepare / write-indiv / from-indiv for each selected subject; 1 if any subject failed."""
    need = "indiv" if args.from_indiv else ("pickle" if args.prepare else "prepared")
    if args.subjects:
        subjects = check_subjects(spec, args.subjects)
        if spec.synthetic and args.prepare:  # subjects without a pickle: are they beyond those generated?
            check_demo_subjects(args.data_root, sorted(set(subjects) - set(subjects_on_disk(args.data_root, spec, args.roi_set, "pickle"))))
    else:
        subjects = subjects_on_disk(args.data_root, spec, args.roi_set, need)
        if not subjects:
            make = download_command(spec, data_root=args.data_root)
            if need == "prepared":
                make += " --prepare"
            raise FileNotFoundError(f"No {spec.name} subject with its {need} input under {layout.root(args.data_root)}: run `{make}` first.")
    if args.dry_run:
        steps = [s for s, on in (("from-indiv", args.from_indiv), ("prepare", args.prepare), ("write-indiv", args.write_indiv)) if on]
        for subject in subjects:
            print(f"would run {' + '.join(steps)} for {spec.name} sub{subject:02d}")
        return 0
    failures, summaries, inputs_failed = {}, {}, {}
    for subject in subjects:
        try:
            report = convert_subject(args, spec, subject)
        except SUBJECT_ERRORS as exc:
            failures[subject] = f"{type(exc).__name__}: {exc}"
            inputs_failed[subject] = subject_input(args, spec, subject)
            print(f"FAILED {spec.name} sub{subject:02d}: {exc}", file=sys.stderr)
            continue
        summaries[subject] = report
        print(report)
    if summaries and (args.prepare or args.from_indiv):
        inputs = {
            f"sub{s:02d}": str(
                indiv_source(args.data_root, spec.name, s, args.roi_set)[0] if args.from_indiv
                else source_pickle_path(args.data_root, spec, s)
            )
            for s in summaries
        }
        write_manifest(layout.dataset_betas_dir(args.data_root, spec.name), "prepare", args, inputs=inputs,
                       counts={"subjects_ok": len(summaries), "subjects_failed": len(failures)}, failures=failures)
    print(f"{spec.name}: {len(summaries)} subject(s) done, {len(failures)} failed")
    for subject, message in failures.items():
        print(f"  failed {spec.name} sub{subject:02d} ({inputs_failed[subject]}): {message}", file=sys.stderr)
    return 1 if failures else 0


def given_flags(parser, args, names: tuple[str, ...]) -> str:
    """Those of the flags ``names`` set to other than their defaults, as ``--a, --b`` ('' for none)."""
    return ", ".join("--" + n.replace("_", "-") for n in names if getattr(args, n) != parser.get_default(n))


def flag_conflicts(parser, args, spec: DatasetSpec) -> list[str]:
    """Flags given that this run would ignore, or that contradict each other: one line each, with why."""
    converting = args.prepare or args.from_indiv or args.write_indiv
    download, demo, convert = (given_flags(parser, args, names) for names in (DOWNLOAD_FLAGS, DEMO_FLAGS, CONVERT_FLAGS))
    problems = []
    if args.prepare and args.from_indiv:
        problems.append("--prepare and --from-indiv both write the prepared layout: choose one.")
    if download and (converting or spec.synthetic):
        why = "the conversions download nothing" if converting else "the demo is synthesised offline"
        problems.append(f"{download} only apply to downloading a real dataset, and {why}: drop them.")
    if demo and (converting or not spec.synthetic):
        why = "the conversions read the demo as it was made" if converting else f"--dataset {spec.name} is not the demo"
        problems.append(f"{demo} only apply to synthesising the demo, and {why}: drop them.")
    if convert and not (args.prepare or args.from_indiv):
        problems.append(f"{convert} only applies with --prepare or --from-indiv: add one, or drop it.")
    if args.retries < 0:
        problems.append(f"--retries must be >= 0, got {args.retries}.")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Parse flags and run the download, the demo or the conversions."""
    parser = build_parser()
    args = parse_args(parser, argv)
    spec = get_spec(args.dataset)
    problems = flag_conflicts(parser, args, spec)
    if problems:
        parser.error(" ".join(problems))
    try:
        if args.prepare or args.from_indiv or args.write_indiv:
            return run_convert(args, spec)
        if spec.synthetic:
            return run_demo(args)
        return run_download(args, spec)
    except (OSError, ValueError, KeyError, download.DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(run_main(main))
