import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from roadseg.errors import RoadsegError
from roadseg.predict import Predictor, blend_weight, d4_forward, d4_inverse, window_starts
from tests.conftest import write_raster


class FirstChannel(torch.nn.Module):
    """A model that is the identity on the red channel: logit(red) -> sigmoid gives red back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, :1].clamp(1e-4, 1 - 1e-4)
        return torch.log(red / (1 - red))


class Scaled(torch.nn.Module):
    """Probability = factor * red (for ensembles)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = (self.factor * x[:, :1]).clamp(1e-4, 1 - 1e-4)
        return torch.log(p / (1 - p))


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.05, 0.95, (3, h, w)).astype(np.float32)


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize(
    ("h", "w", "window", "overlap"), [(400, 400, 1024, 128), (300, 517, 128, 48), (97, 61, 32, 8)]
)
def test_identity_model_comes_back_through_windows_and_tta(h, w, window, overlap, tta):
    image = random_image(h, w)
    predictor = Predictor([FirstChannel()], window=window, overlap=overlap, tta=tta, progress=False)
    prob = predictor.predict_image(image)
    assert prob.shape == (h, w)
    np.testing.assert_allclose(prob, image[0], atol=1e-5)  # no seams, no shifts


def test_d4_views_invert():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    views = [d4_forward(x, k) for k in range(8)]
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    for k in range(8):
        assert torch.equal(d4_inverse(views[k], k), x)


def test_windows_cover_the_image_and_weights_never_vanish():
    assert window_starts(100, 100, 80) == [0]
    assert window_starts(300, 128, 80) == [0, 80, 160, 172]
    weight = blend_weight(16, 16)
    assert weight.min() > 0 and weight[8, 8] == weight.max()


def test_an_ensemble_is_the_mean_of_its_members():
    image = random_image(64, 64)
    members = [Scaled(0.5), Scaled(1.0)]
    mean = Predictor(members, progress=False).predict_image(image)
    singles = [Predictor([m], progress=False).predict_image(image) for m in members]
    np.testing.assert_allclose(mean, (singles[0] + singles[1]) / 2, atol=1e-6)


def test_geotiff_scene_keeps_crs_transform_and_nodata(tmp_path):
    h, w = 300, 260
    pixels = (random_image(h, w) * 255).astype(np.uint8)
    pixels[:, :40, :30] = 0
    transform = from_origin(2_600_000, 1_200_000, 0.5, 0.5)
    src = write_raster(
        tmp_path / "scene.tif", pixels, crs="EPSG:2056", transform=transform, nodata=0
    )
    predictor = Predictor([FirstChannel()], window=128, overlap=32, progress=False)
    predictor.predict_scene(src, tmp_path / "prob.tif", chunk=100)
    predictor.predict_scene(src, tmp_path / "mask.tif", output="mask", chunk=100)
    with rasterio.open(tmp_path / "prob.tif") as prob, rasterio.open(tmp_path / "mask.tif") as mask:
        assert prob.crs.to_epsg() == 2056 and prob.transform == transform
        assert (prob.width, prob.height) == (w, h) and prob.nodata == -1 and mask.nodata == 255
        assert prob.profile["tiled"] and prob.compression.value.lower() == "deflate"
        p, m = prob.read(1), mask.read(1)
    assert (p[:40, :30] == -1).all() and (m[:40, :30] == 255).all()
    valid = np.ones((h, w), bool)
    valid[:40, :30] = False
    np.testing.assert_allclose(p[valid], pixels[0][valid] / 255.0, atol=1e-5)
    np.testing.assert_array_equal(m[valid], (pixels[0][valid] / 255.0 > 0.5).astype(np.uint8))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["mask.tif", "prob.tif", "scene.tif"]


def test_bad_predictor_settings_are_refused():
    with pytest.raises(RoadsegError, match="overlap"):
        Predictor([FirstChannel()], window=64, overlap=64)
    with pytest.raises(RoadsegError, match="precision"):
        Predictor([FirstChannel()], precision="fp8")
