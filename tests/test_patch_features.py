import pytest
import torch

from roadseg.models.patch_cnn import HISTOGRAM_BINS, N_PATCH_FEATURES, patch_features, patch_windows


def test_constant_patch_features():
    x = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 16, 16).contiguous()
    f = patch_features(x)[0, :, 0, 0]
    assert f.shape == (N_PATCH_FEATURES,)
    assert f[:3].tolist() == pytest.approx([0.2, 0.4, 0.6], abs=1e-5)
    assert f[3:6].tolist() == pytest.approx([0, 0, 0], abs=1e-6)
    hist = f[6 : 6 + 3 * HISTOGRAM_BINS].view(3, HISTOGRAM_BINS)
    expected = torch.zeros(3, HISTOGRAM_BINS)
    expected[0, 1] = expected[1, 3] = expected[2, 4] = 1  # 0.2*8=1.6, 0.4*8=3.2, 0.6*8=4.8
    assert torch.equal(hist, expected)
    assert f[-4:].tolist() == pytest.approx([0, 0, 0, 0], abs=1e-6)


def test_vertical_edge_features():
    x = torch.zeros(1, 3, 16, 16)
    x[..., 8:] = 1  # left half black, right half white
    f = patch_features(x)[0, :, 0, 0]
    # Sobel x at columns 7 and 8 is 1+2+1 = 4, elsewhere 0: mean 2*16*4/256, E[m^2] 2*16*16/256
    assert f[-4].item() == pytest.approx(0.5)
    assert f[-3].item() == pytest.approx(2.0 - 0.25)
    assert f[-2].item() == pytest.approx(32 / 256)  # x-gradient-dominant pixels
    assert f[-1].item() == pytest.approx(0.0)


def test_patch_windows_are_centred_on_their_patch():
    x = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32)
    windows = patch_windows(x, 32)  # 4 patches, 8 pixels of context on each side
    assert windows.shape == (4, 1, 32, 32)
    assert torch.equal(windows[3, 0, 8:24, 8:24], x[0, 0, 16:32, 16:32])
