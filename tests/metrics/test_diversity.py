"""diversity: intra-prompt LPIPS (lpips package, a random-weight torchvision AlexNet backbone saved
as a local file) and the Vendi score (vendi-score package) of Inception features (torch-fidelity's
architecture, random weights saved as a local file); real photographs from scikit-image and
scikit-learn as images."""

import numpy as np
import pytest
import torch

from cdm_bench.errors import MissingDependencyError  # also installs the torchvision compat hook (cdm_bench.compat)

for _mod in ("lpips", "vendi_score", "torch_fidelity", "cleanfid", "skimage"):
    pytest.importorskip(_mod)

from metrics.diversity import BACKBONES, Diversity  # noqa: E402
from metrics.fid import INCEPTION_FILE  # noqa: E402
from inception_fixtures import save_random_inception  # noqa: E402

K = 4


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(AlexNet backbone file, Inception file): random weights under their hub-cache file names."""
    import torchvision

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    alex = d / BACKBONES["alex"][1]
    torch.save(torchvision.models.alexnet().state_dict(), alex)
    return alex, save_random_inception(d / INCEPTION_FILE)


def metric(weights, **kw):
    return Diversity(lpips_backbone=str(weights[0]), inception_weights=str(weights[1]), features=64, **kw)


def photos():
    from skimage import data
    from sklearn.datasets import load_sample_images

    return [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), *load_sample_images().images]


def crop(im, seed, size=64):
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
    return im[y:y + size, x:x + size]


def similar(seed, std=6):
    """K slightly noised copies of one crop."""
    base = crop(photos()[seed % 6], seed).astype(np.float64)
    rng = np.random.default_rng(seed)
    return np.stack([np.clip(base + rng.normal(0, std, base.shape), 0, 255).round() for _ in range(K)]).astype(np.uint8)


def varied(seed):
    """K crops of K different photographs."""
    return np.stack([crop(photos()[(seed + i) % 6], seed + i) for i in range(K)])


def rows(groups):
    """Images of several prompts (K each, in prompt order), their prompts and manifest records."""
    images = np.concatenate(groups)
    meta = [{"prompt_id": f"p{g}", "k": k, "seed": 10 * g + k} for g in range(len(groups)) for k in range(K)]
    return images, [f"prompt {m['prompt_id']}" for m in meta], meta


def values(weights, groups, **kw):
    m = metric(weights, **kw)
    m.update(*rows(groups))
    return m.compute()


def test_identical_samples_give_lpips_0_and_vendi_1(weights):
    same = [np.repeat(crop(photos()[i], i)[None], K, axis=0) for i in range(2)]
    v = values(weights, same)
    assert v["lpips"] == v["diversity"] == 0.0
    assert v["vendi"] == pytest.approx(1.0, abs=1e-6) and v["n_prompts"] == 2


def test_more_varied_samples_score_higher(weights):
    low, high = values(weights, [similar(1)]), values(weights, [varied(1)])
    assert 0 < low["lpips"] < high["lpips"]
    assert 1 < low["vendi"] < high["vendi"] <= K + 1e-9
    lowest = values(weights, [similar(1, std=2)])
    assert lowest["lpips"] < low["lpips"] and lowest["vendi"] < low["vendi"]


# the seed-0 random backbones of the fixture, features=64, on the kit's images (recorded 2026-11-26)
GOLDEN = 0.07964844666033362


def test_passes_the_kit(weights):
    """Batches of 1 and 3 and shuffled order split prompts over updates (their samples wait in the
    metric); the 2 "ranks" hold whole prompts, as evaluate's chunks (multiples of group_size) do."""
    from metric_kit import check_metric

    images, prompts, meta = rows([varied(3), similar(4)])
    ref = check_metric(lambda: metric(weights), images, prompts, meta, golden=GOLDEN)
    assert ref.values["n_prompts"] == 2 and ref.values["vendi"] > 1
    assert metric(weights).group_size == K and metric(weights, samples=2).group_size == 2


def test_lpips_equals_the_package_loading_the_same_backbone_itself(weights, tmp_path, monkeypatch):
    """With the backbone file in torch's hub cache, the metric finds it with no option, and
    ``lpips.LPIPS()`` (torchvision's own loading of the cached file) gives the same distances."""
    import lpips

    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / BACKBONES["alex"][1]).symlink_to(weights[0])
    (hub / INCEPTION_FILE).symlink_to(weights[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    group = varied(5)
    ours = Diversity(features=64)
    ours.check()
    got = values(weights, [group])["lpips"]
    assert ours.describe()["lpips_backbone_fingerprint"] == metric(weights).describe()["lpips_backbone_fingerprint"]
    ours.update(*rows([group]))
    assert ours.compute()["lpips"] == pytest.approx(got, rel=1e-6)
    ref = lpips.LPIPS(net="alex", verbose=False)
    x = torch.from_numpy(group).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        want = np.mean([float(ref(x[i:i + 1], x[j:j + 1])) for i in range(K) for j in range(i + 1, K)])
    assert got > 1e-3 and got == pytest.approx(want, rel=1e-5)


def test_refuses_fewer_than_two_or_mismatched_samples(weights):
    with pytest.raises(ValueError, match="samples must be >= 2"):
        metric(weights, samples=1)
    images, prompts, meta = rows([varied(1)])
    two = metric(weights)  # a run with 2 samples per prompt, scored with samples=4
    two.update(images[:2], prompts[:2], meta[:2])
    for step in (two.state, two.compute):
        with pytest.raises(ValueError, match=r"prompt 'p0' has 2 sample\(s\), expected samples=4") as err:
            step()
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="has sample k=2 but samples=2"):
        metric(weights, samples=2).update(images, prompts, meta)


def test_missing_backbone_is_a_one_line_error(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    m = Diversity(inception_weights=str(weights[1]))
    for step in (m.check, m.setup):
        with pytest.raises(MissingDependencyError) as err:
            step()
        msg = str(err.value)
        assert "\n" not in msg and "alexnet-owt-7be5be79.pth" in msg and "lpips_backbone" in msg, msg
        assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in msg
