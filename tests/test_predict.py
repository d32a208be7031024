import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from roadseg.backends import d4_forward, d4_inverse
from roadseg.errors import RoadsegError
from roadseg.patches import labels_to_mask
from roadseg.postprocess import Decision
from roadseg.predict import Predictor, blend_weight, fitted_windows
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
    assert fitted_windows(100, 100, 20) == (100, [0])
    for size, window, overlap in [(300, 128, 48), (4800, 1024, 128), (1280, 1024, 128),
                                  (1001, 1000, 10), (2000, 100, 99)]:  # fmt: skip
        side, starts = fitted_windows(size, window, overlap)
        assert side <= window and starts[0] == 0 and starts[-1] + side == size
        assert all(b - a <= side - overlap + 1 for a, b in zip(starts, starts[1:], strict=False))
    assert fitted_windows(1280, 1024, 128) == (704, [0, 576])  # two of 704, not of 1,024
    weight = blend_weight(16, 16)
    assert weight.min() > 0 and weight[8, 8] == weight.max()


def test_an_ensemble_is_the_mean_of_its_members():
    image = random_image(64, 64)
    members = [Scaled(0.5), Scaled(1.0)]
    mean = Predictor(members, progress=False).predict_image(image)
    singles = [Predictor([m], progress=False).predict_image(image) for m in members]
    np.testing.assert_allclose(mean, (singles[0] + singles[1]) / 2, atol=1e-6)


@pytest.mark.parametrize("window", [1024, 48])
def test_a_vote_is_the_majority_of_the_members_patch_labels(window):
    image = random_image(80, 112, seed=3)
    image[0] = np.clip(np.linspace(0.05, 0.95, 112)[None] + (image[0] - 0.5) * 0.4, 0, 1)
    members = [Scaled(0.6), Scaled(1.0), Scaled(1.4)]
    decisions = [Decision(pixel=0.5, patch=0.25), Decision(pixel=0.4, patch=0.5), Decision()]
    labels = [
        d.labels(Predictor([m], progress=False).predict_image(image))
        for m, d in zip(members, decisions, strict=True)
    ]
    assert len({lab.tobytes() for lab in labels}) == 3  # the members disagree
    vote = Predictor(
        members, merge="vote", decisions=decisions, window=window, overlap=16, progress=False
    )
    share = vote.predict_image(image)
    np.testing.assert_allclose(share, np.mean([labels_to_mask(lab, 80, 112) for lab in labels], 0))
    majority = (np.sum(labels, axis=0) >= 2).astype(np.uint8)
    np.testing.assert_array_equal(vote.output_decision.labels(share), majority)
    batch = vote.predict_batch(image[None])[0]  # whole tiles, batched
    np.testing.assert_allclose(batch, share)


def test_a_scene_mask_is_post_processed_across_chunks(tmp_path):
    h, w = 160, 224
    pixels = np.full((3, h, w), 20, dtype=np.uint8)
    pixels[0, 70:76, :] = 230  # a road across every chunk
    pixels[0, 70:76, 100:106] = 20  # with a 6 px break at a chunk border (96)
    pixels[0, 10:16, 150:156] = 230  # a 36 px speck
    src = write_raster(tmp_path / "scene.tif", pixels)
    predictor = Predictor([FirstChannel()], window=64, overlap=32, progress=False)
    decision = Decision(close_gaps=8, min_area=50)
    predictor.predict_scene(src, tmp_path / "mask.tif", output="mask", decision=decision, chunk=96)
    with rasterio.open(tmp_path / "mask.tif") as out:
        mask = out.read(1)
    expected = np.zeros((h, w), np.uint8)
    expected[70:76, :] = 1
    np.testing.assert_array_equal(mask, expected)


def test_geotiff_scene_keeps_crs_transform_and_nodata(tmp_path):
    h, w = 300, 260
    pixels = (random_image(h, w) * 255).astype(np.uint8)
    pixels[:, :40, :30] = 0
    transform = from_origin(2_600_000, 1_200_000, 0.5, 0.5)
    src = write_raster(
        tmp_path / "scene.tif", pixels, crs="EPSG:2056", transform=transform, nodata=0
    )
    predictor = Predictor([FirstChannel()], window=128, overlap=32, progress=False)
    predictor.predict_scene(src, tmp_path / "prob.tif", chunk=96)
    predictor.predict_scene(src, tmp_path / "mask.tif", output="mask", chunk=96)
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
    with pytest.raises(RoadsegError, match="unknown merge"):
        Predictor([FirstChannel()], merge="median")
    with pytest.raises(RoadsegError, match="2 models but 1 decisions"):
        Predictor([FirstChannel(), FirstChannel()], merge="vote", decisions=[Decision()])
    with pytest.raises(RoadsegError, match="multiple of 16"):
        Predictor([FirstChannel()]).predict_scene("x.tif", "y.tif", chunk=100)


def test_prob8_scene_is_the_probability_in_eight_bits(tmp_path):
    from roadseg.vectors import read_road_raster

    h, w = 200, 230
    pixels = (random_image(h, w, seed=4) * 255).astype(np.uint8)
    pixels[:, :30, :20] = 0
    src = write_raster(tmp_path / "scene.tif", pixels, crs="EPSG:2056",
                       transform=from_origin(2_600_000, 1_200_000, 0.5, 0.5), nodata=0)  # fmt: skip
    predictor = Predictor([FirstChannel()], window=128, overlap=32, progress=False)
    predictor.predict_scene(src, tmp_path / "p8.tif", output="prob8", chunk=96)
    with rasterio.open(tmp_path / "p8.tif") as p8:
        assert p8.dtypes[0] == "uint8" and p8.nodata == 255
        assert p8.scales[0] == pytest.approx(1 / 254) and p8.tags()["roadseg_output"] == "prob8"
        values = p8.read(1)
        road, prob = read_road_raster(p8, rasterio.windows.Window(0, 0, w, h), 0.5)
    valid = np.ones((h, w), bool)
    valid[:30, :20] = False
    assert (values[~valid] == 255).all() and not road[~valid].any()
    np.testing.assert_allclose(values[valid] / 254, pixels[0][valid] / 255, atol=0.5 / 254 + 1e-5)
    np.testing.assert_allclose(prob[valid], values[valid] / 254, atol=1e-6)  # read back scaled
    np.testing.assert_array_equal(road[valid], prob[valid] > 0.5)
