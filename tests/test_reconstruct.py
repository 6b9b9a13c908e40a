"""reconstruct_zeroscope.main on tiny fake predictions: exact files, resume, oracles, bad inputs,
the c_zeroscope conditioning path, the recipe switch and the lossless frames."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import reconstruct_zeroscope
from models import zoo
from models.video_diffusion import VideoDiffusion, encode_prompts
from utils import layout, provenance
from utils.cli import parse_args
from utils.video import read_video

RUN = "fake_run"
HAD_NAME = "Drum corps/v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1"
STIMULI = ["0121", "0122", "0123"]  # demo names (HAD's class subfolders: test_had_clips_keep_their_class_folder)
LATENT = (15, 4, 8, 8)  # tiny preset: 64 px frames -> 8x8 latents
BLIP = (17, 32)  # tiny BLIP at 32 px
FAST = ["--preset", "tiny", "--device", "cpu", "--steps", "4", "--strength", "0.5", "--batch-size", "2"]



def write_predictions(root: Path, stimuli: list[str], flatten: bool = False, latent_shape: tuple = LATENT) -> None:
    rng = np.random.default_rng(0)
    for stim in stimuli:
        z = rng.standard_normal(latent_shape).astype(np.float32)
        b = rng.standard_normal(BLIP).astype(np.float32)
        for target, array in (("z_zeroscope", z), ("blip", b)):
            path = layout.predictions_dir(root, RUN, target) / f"{stim}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, array.ravel() if flatten else array)


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def expected_files(stimuli: list[str]) -> set[str]:
    clips = {f"mp4/{s}.mp4" for s in stimuli} | {f"gif/{s}.gif" for s in stimuli} | {f"frames/{s}.npy" for s in stimuli}
    return clips | {"captions.json", "manifest.json", "settings.json"}


def run(root: Path, *extra: str) -> int:
    return reconstruct_zeroscope.main(["--data-root", str(root), *FAST, "--run", RUN, *extra])


def test_had_clips_keep_their_class_folder(tmp_path):
    write_predictions(tmp_path, [HAD_NAME])
    assert run(tmp_path, "--dataset", "had") == 0
    assert files_under(layout.reconstructions_dir(tmp_path, RUN)) == expected_files([HAD_NAME])


def test_writes_exact_files_and_resumes(tmp_path):
    write_predictions(tmp_path, STIMULI)
    copy = layout.subject_predictions_dir(tmp_path, RUN, "z_zeroscope", "demo", "sub01") / "0121.npy"
    copy.parent.mkdir(parents=True)
    np.save(copy, np.zeros(LATENT, dtype=np.float32))  # regress.py's per-subject copy: not a clip
    out = layout.reconstructions_dir(tmp_path, RUN)
    assert run(tmp_path, "--limit", "2") == 0
    assert files_under(out) == expected_files(STIMULI[:2])
    frames = read_video(out / "mp4" / "0121.mp4")
    assert frames.shape == (15, 64, 64, 3)

    mtime = (out / "mp4" / "0121.mp4").stat().st_mtime_ns
    assert run(tmp_path) == 0  # resumes: only the third clip is new
    assert files_under(out) == expected_files(STIMULI)
    assert (out / "mp4" / "0121.mp4").stat().st_mtime_ns == mtime
    captions = json.loads((out / "captions.json").read_text())
    assert sorted(captions) == sorted(STIMULI)
    assert all(isinstance(c, str) and c and not c.startswith("a picture of") for c in captions.values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["stimuli"] == 3 and manifest["counts"]["skipped"] == 2
    assert manifest["counts"]["complete"] == 3
    assert manifest["flags"]["strength"] == 0.5

    gif_before = (out / "gif" / f"{STIMULI[2]}.gif").read_bytes()
    assert run(tmp_path, "--overwrite", "--limit", "1") == 0
    assert (out / "mp4" / "0121.mp4").stat().st_mtime_ns != mtime
    assert json.loads((out / "manifest.json").read_text())["counts"]["reconstructed"] == 1
    assert (out / "gif" / f"{STIMULI[2]}.gif").read_bytes() == gif_before
    assert not list(out.glob(".captions.rank*.json"))


def test_same_seed_same_video_and_flattened_input(tmp_path):
    write_predictions(tmp_path, ["0121"], flatten=True)
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        run(tmp_path, "--output-run", name, "--seed", seed, "--caption-from", "none")
    # The lossless frames: H.264 encoding is not byte-stable between calls, so the mp4s may differ.
    clip = {name: np.load(layout.reconstruction_frames_path(layout.reconstructions_dir(tmp_path, name), "0121")).astype(int) for name in "abc"}
    np.testing.assert_array_equal(clip["a"], clip["b"])
    assert np.abs(clip["a"] - clip["c"]).mean() > 1.0


def test_ground_truth_source(tmp_path):
    stimuli = ["0121", "0122"]
    notes = {s: {"set": "test"} for s in stimuli} | {"0001": {"set": "train"}}
    meta = layout.metadata_dir(tmp_path, "demo") / "annotations.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps(notes))
    rng = np.random.default_rng(1)
    for stim in stimuli:
        path = layout.target_path(tmp_path, "demo", "z_zeroscope", stim)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.standard_normal(LATENT).astype(np.float32))
    provenance.write_settings(layout.targets_dir(tmp_path, "demo", "z_zeroscope"), "test", {"recipe": "default", "preset": "tiny"})
    layout.captions_path(tmp_path, "demo").write_text(json.dumps({"0121": "a picture of a red ball", "0122": "blue boxes", "0001": "x"}))
    code = reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--source", "targets", "--strength", "0"])
    assert code == 0
    out = layout.reconstructions_dir(tmp_path, "gt_demo")
    assert files_under(out) == expected_files(stimuli)
    assert json.loads((out / "captions.json").read_text()) == {"0121": "a red ball", "0122": "blue boxes"}


def test_missing_and_malformed_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"regress\.py --data-root .*--target z_zeroscope"):
        run(tmp_path)
    with pytest.raises(ValueError, match="--run is needed"):
        reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST])
    write_predictions(tmp_path, ["0121"])
    with pytest.raises(FileNotFoundError, match=r"extract_targets_zeroscope\.py --dataset demo"):
        run(tmp_path, "--z-from", "gt")
    with pytest.raises(FileNotFoundError, match=r"extract_targets_blip\.py"):
        run(tmp_path, "--caption-from", "gt")
    (layout.predictions_dir(tmp_path, RUN, "blip") / "0121.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"lack 1 stimuli .*regress\.py --data-root .*--target blip"):
        run(tmp_path)


def test_wrong_latent_shape_names_expected_and_found(tmp_path):
    write_predictions(tmp_path, ["0121"], latent_shape=(15, 4, 33, 33))
    with pytest.raises(ValueError, match=r"\(15, 4, 33, 33\).*'tiny' preset expects \(15, 4, 8, 8\)"):
        run(tmp_path, "--caption-from", "none")


def test_latents_from_another_preset_are_refused(tmp_path):
    write_predictions(tmp_path, ["0121"])
    target = layout.target_path(tmp_path, "demo", "z_zeroscope", "0121")
    target.parent.mkdir(parents=True)
    np.save(target, np.zeros(LATENT, dtype=np.float32))
    with pytest.raises(ValueError, match=r"z_zeroscope targets of demo\) has no record"):
        run(tmp_path, "--caption-from", "none")
    provenance.write_settings(target.parent, "extract_targets_zeroscope", {"recipe": "default", "preset": "default"})
    with pytest.raises(ValueError, match=r"--preset 'tiny' does not match .* made with preset 'default'"):
        run(tmp_path, "--caption-from", "none")


# ----------------------------------------------------------------------------- c_zeroscope, recipe, lossless frames

TEXT_STATES = (77, 32)  # tiny text encoder: 77 tokens, hidden size 32


def c_zeroscope_arrays(captions: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """What the c_zeroscope targets hold: the tiny Zeroscope text encoder's states of each
    stimulus' captions, averaged (77, 32); all captions go through the encoder in one batch."""
    parts = zoo.load_zeroscope("tiny", parts=("text_encoder", "tokenizer"))
    texts = [c for caps in captions.values() for c in caps]
    states = encode_prompts(parts["text_encoder"], parts["tokenizer"], texts, "cpu").numpy()  # (n captions, 77, 32)
    out, start = {}, 0
    for stim, caps in captions.items():
        out[stim] = states[start : start + len(caps)].mean(axis=0)
        start += len(caps)
    return out


def write_ground_truth(root: Path, stimuli: list[str], captions: dict[str, str]) -> None:
    """Test-split annotations, true latents and captions.json for ``stimuli``."""
    meta = layout.metadata_dir(root, "demo") / "annotations.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({s: {"set": "test"} for s in stimuli}))
    rng = np.random.default_rng(1)
    for stim in stimuli:
        path = layout.target_path(root, "demo", "z_zeroscope", stim)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.standard_normal(LATENT).astype(np.float32))
    provenance.write_settings(layout.targets_dir(root, "demo", "z_zeroscope"), "test", {"recipe": "default", "preset": "tiny"})
    layout.captions_path(root, "demo").write_text(json.dumps(captions))


def test_c_zeroscope_from_predictions(tmp_path):
    stimuli = STIMULI[:2]
    write_predictions(tmp_path, stimuli)
    embeds = c_zeroscope_arrays({"0121": ["a red ball", "a red ball rolls"], "0122": ["blue boxes"]})
    for stim, array in embeds.items():
        path = layout.prediction_path(tmp_path, RUN, "c_zeroscope", stim)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array.ravel() if stim == "0122" else array)  # flattened predictions are reshaped
    (layout.predictions_dir(tmp_path, RUN, "blip") / "0121.npy").unlink()  # not read on this path
    assert run(tmp_path, "--condition", "c_zeroscope") == 0
    out = layout.reconstructions_dir(tmp_path, f"{RUN}_c_zeroscope")
    assert files_under(out) == expected_files(stimuli)
    assert json.loads((out / "captions.json").read_text()) == {"0121": "", "0122": ""}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["condition"] == "c_zeroscope" and manifest["flags"]["condition"] == "c_zeroscope"
    assert manifest["inputs"]["prompt_embeds"].endswith(f"predictions/{RUN}/c_zeroscope/<stim>.npy")
    assert manifest["flags"]["steps"] == 4 and manifest["flags"]["strength"] == 0.5

    with pytest.raises(ValueError, match="--caption-from none has no c_zeroscope"):
        run(tmp_path, "--condition", "c_zeroscope", "--caption-from", "none")
    (layout.predictions_dir(tmp_path, RUN, "c_zeroscope") / "0122.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"lack 1 stimuli .*regress\.py --data-root .*--target c_zeroscope"):
        run(tmp_path, "--condition", "c_zeroscope", "--overwrite")


def test_c_zeroscope_oracle_equals_the_caption_it_encodes(tmp_path):
    """True c_zeroscope of one caption per stimulus = that caption's encoding: the oracle clips
    equal the ground-truth-caption clips (same latents, same noise)."""
    stimuli = ["0121", "0122"]
    captions = {"0121": "a red ball", "0122": "blue boxes"}
    write_ground_truth(tmp_path, stimuli, captions)
    for stim, array in c_zeroscope_arrays({s: [captions[s]] for s in stimuli}).items():
        path = layout.target_path(tmp_path, "demo", "c_zeroscope", stim)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)
    base = ["--data-root", str(tmp_path), *FAST, "--source", "targets"]
    with pytest.raises(ValueError, match=r"c_zeroscope targets of demo\) has no record"):
        reconstruct_zeroscope.main([*base, "--condition", "c_zeroscope"])
    provenance.write_settings(layout.targets_dir(tmp_path, "demo", "c_zeroscope"), "test", {"recipe": "default"})
    assert reconstruct_zeroscope.main([*base, "--condition", "c_zeroscope"]) == 0
    assert reconstruct_zeroscope.main(base) == 0
    oracle, caption = (layout.reconstructions_dir(tmp_path, name) for name in ("gt_demo_c_zeroscope", "gt_demo"))
    assert files_under(oracle) == expected_files(stimuli)
    for stim in stimuli:
        np.testing.assert_array_equal(
            np.load(layout.reconstruction_frames_path(oracle, stim)), np.load(layout.reconstruction_frames_path(caption, stim))
        )
    assert json.loads((oracle / "manifest.json").read_text())["inputs"]["prompt_embeds"].endswith("target_vectors_demo/c_zeroscope/<stim>.npy")

    (layout.target_path(tmp_path, "demo", "c_zeroscope", "0122")).unlink()
    with pytest.raises(FileNotFoundError, match=r"c_zeroscope.*0122.*extract_targets_zeroscope\.py"):
        reconstruct_zeroscope.main([*base, "--condition", "c_zeroscope", "--overwrite"])


def test_c_zeroscope_wrong_shapes_name_file_expected_and_found(tmp_path):
    write_predictions(tmp_path, ["0121"])
    path = layout.prediction_path(tmp_path, RUN, "c_zeroscope", "0121")
    path.parent.mkdir(parents=True)
    for shape in ((77, 1024), (20, 32), (77 * 32 + 1,)):
        np.save(path, np.zeros(shape, dtype=np.float32))
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))} have shape {re.escape(str(shape))}.*'tiny'.*expects \(77, 32\).*flattened 2464"):
            run(tmp_path, "--condition", "c_zeroscope")


def test_condition_sets_the_diffusion_defaults():
    def settings(*argv: str):
        return reconstruct_zeroscope.diffusion_settings(parse_args(reconstruct_zeroscope.build_parser(), ["--run", RUN, *argv]))

    assert (settings().steps, settings().strength) == (20, 0.8)
    assert (settings("--condition", "c_zeroscope").steps, settings("--condition", "c_zeroscope").strength) == (50, 0.3)
    explicit = settings("--condition", "c_zeroscope", "--steps", "7", "--strength", "0.6", "--negative-prompt", "dark")
    assert (explicit.steps, explicit.strength, explicit.negative_prompt) == (7, 0.6, "dark")
    assert settings("--strength", "0").strength == 0.0  # an explicit 0 is not "unset"


def test_recipe_switches_caption_decoding(tmp_path, monkeypatch):
    seen = []
    real = reconstruct_zeroscope.caption_embeddings

    def spy(model, processor, embeds, settings, batch_size):
        seen.append(settings)
        return real(model, processor, embeds, settings, batch_size=batch_size)

    monkeypatch.setattr(reconstruct_zeroscope, "caption_embeddings", spy)
    write_predictions(tmp_path, ["0121"])
    fast = ["--steps", "1", "--strength", "0"]
    for name, extra, beams, slash in (
        ("default", [], 3, False),
        ("original", ["--recipe", "original"], 1, True),
        ("original_beams", ["--recipe", "original", "--caption-beams", "2"], 2, True),
        ("no_slash", ["--recipe", "original", "--no-caption-slash-to-space"], 1, False),
    ):
        seen.clear()
        assert run(tmp_path, "--output-run", name, *fast, *extra) == 0
        assert [(s.num_beams, s.slash_to_space) for s in seen] == [(beams, slash)], name
        flags = json.loads((layout.reconstructions_dir(tmp_path, name) / "manifest.json").read_text())["flags"]
        assert (flags["caption_beams"], flags["caption_slash_to_space"]) == (beams, slash)
    assert flags["recipe"] == "original"
    caption = json.loads((layout.reconstructions_dir(tmp_path, "original") / "captions.json").read_text())["0121"]
    assert caption and "/" not in caption


def test_lossless_frames_are_the_models_frames(tmp_path, monkeypatch):
    returned: list[np.ndarray] = []
    real = VideoDiffusion.__call__

    def spy(self, *args, **kwargs):
        frames = real(self, *args, **kwargs)
        returned.extend(frames)
        return frames

    monkeypatch.setattr(VideoDiffusion, "__call__", spy)
    write_predictions(tmp_path, STIMULI)
    assert run(tmp_path, "--caption-from", "none") == 0
    out = layout.reconstructions_dir(tmp_path, f"{RUN}_z-pred_caption-none")
    assert len(returned) == len(STIMULI)
    for stim, clip in zip(STIMULI, returned, strict=True):
        frames = np.load(layout.reconstruction_frames_path(out, stim))
        assert frames.dtype == np.uint8 and frames.shape == (15, 64, 64, 3)
        np.testing.assert_array_equal(frames, clip)  # lossless: exactly the model's frames
        decoded = read_video(layout.reconstruction_video_paths(out, stim)[0])
        assert decoded.shape == frames.shape
        assert np.abs(decoded.astype(int) - frames).mean() < 20  # H.264 is close, not equal (noisy tiny-model frames)

    # A clip is done only when its frames, mp4 and gif all exist.
    missing = layout.reconstruction_frames_path(out, STIMULI[0])
    missing.unlink()
    mtimes = {s: layout.reconstruction_video_paths(out, s)[0].stat().st_mtime_ns for s in STIMULI}
    returned.clear()
    assert run(tmp_path, "--caption-from", "none") == 0
    assert len(returned) == 1 and missing.exists()
    np.testing.assert_array_equal(np.load(missing), returned[0])
    assert layout.reconstruction_video_paths(out, STIMULI[0])[0].stat().st_mtime_ns != mtimes[STIMULI[0]]
    assert all(layout.reconstruction_video_paths(out, s)[0].stat().st_mtime_ns == mtimes[s] for s in STIMULI[1:])
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.suffix in (".npy", ".mp4", ".gif")]
