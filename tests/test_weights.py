"""Weights files: round trip, and a clear WeightsError for every way a file can be wrong."""
import pickle

import pytest
import torch

from engines import create_model
from engines.weights import WeightsError, load_weights, save_weights


@pytest.fixture(scope="module")
def model():
    return create_model("glint", weights=None)


def test_round_trip_marks_trained_and_keeps_outputs(model, tmp_path):
    path = save_weights(model, tmp_path / "glint.pt", meta={"recipe": "test"})
    fresh = create_model("glint", weights=path)
    assert fresh.trained and not model.trained
    assert fresh.weights_info["recipe"] == "test" and len(fresh.weights_info["sha256"]) == 64
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        a, b = model(x)[0], fresh(x)[0]
    # stored in fp16: equal to fp16 rounding
    assert torch.allclose(a, b, atol=0.2)


def test_weights_set_the_served_input_size(tmp_path):
    """Weights trained at another size (e.g. 512) are served at that size, not the class default."""
    from engines.engine import QualityEngine

    trained = create_model("glint", weights=None)
    trained.input_size = 256
    path = save_weights(trained, tmp_path / "glint.pt")
    assert create_model("glint", weights=path).input_size == 256
    assert create_model("glint", weights=None).input_size == 384
    assert QualityEngine("glint", backend="cpu", weights=path).input_size == 256


def test_trained_weights_need_no_imagenet_file(tmp_path, monkeypatch):
    """A weights file holds the whole backbone: loading it never reads the ImageNet weights
    (their package may be missing where the product or a GPU benchmark runs)."""
    from engines.backbone import WEIGHTS_ENV

    ref = create_model("glint")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "absent.pt"))  # any ImageNet read now fails
    model = create_model("glint")
    assert model.trained
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ref.state_dict().items())
    with pytest.raises(FileNotFoundError, match=WEIGHTS_ENV):
        create_model("glint", weights=None)


def test_missing_file(model, tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(model, tmp_path / "nope.pt")


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", b"PK\x03\x04broken zip"])
def test_corrupt_file(model, tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="corrupt"):
        load_weights(model, path)


def test_truncated_file(model, tmp_path):
    path = save_weights(model, tmp_path / "w.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="corrupt"):
        load_weights(model, path)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_code_in_pickle_is_refused(model, tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "vqmon-weights", "x": _Evil()}, path)
    with pytest.raises(WeightsError):
        load_weights(model, path)
    assert "code ran" not in capsys.readouterr().out


def test_weights_of_another_model(model, tmp_path):
    other = create_model("bifusion", weights=None)
    path = save_weights(other, tmp_path / "bifusion.pt")
    with pytest.raises(WeightsError, match="bifusion"):
        load_weights(model, path)


def test_mismatched_state(model, tmp_path):
    path = save_weights(model, tmp_path / "w.pt")
    payload = torch.load(path, weights_only=True)
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = torch.zeros(3, 3)
    del payload["state_dict"][list(payload["state_dict"])[-1]]
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="missing.*wrong shape|wrong shape"):
        load_weights(model, path)


def test_not_a_vqmon_file(model, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(WeightsError, match="not a vqmon weights file"):
        load_weights(model, path)
