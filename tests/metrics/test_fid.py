"""fid / kid on torch-fidelity's Inception-v3 architecture with random weights, saved as a local
weights file that loads through the metrics' normal path; real photographs that ship with
scikit-image and scikit-learn (crops) as images. Most tests use the 64-channel pool layer
(``features=64``): full-rank covariances from ~100 images, and a cheap forward on 2 CPU cores."""

import numpy as np
import pytest
import torch
from PIL import Image

from cdm_bench.errors import MissingDependencyError  # also installs the torchvision compat hook (cdm_bench.compat)

pytest.importorskip("torch_fidelity")
pytest.importorskip("cleanfid")
pytest.importorskip("skimage")

from inception_fixtures import save_random_inception  # noqa: E402

from metrics.fid import FID, INCEPTION_FILE, INCEPTION_URL, KID  # noqa: E402


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return save_random_inception(tmp_path_factory.mktemp("inception") / INCEPTION_FILE)


def photos():
    from skimage import data
    from sklearn.datasets import load_sample_images

    return [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), *load_sample_images().images]


def crops(n, seed, size=64):
    """n random size x size crops of the real photographs (round robin over the photos)."""
    rng, src = np.random.default_rng(seed), photos()
    out = []
    for i in range(n):
        im = src[i % len(src)]
        y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
        out.append(im[y:y + size, x:x + size])
    return np.stack(out).astype(np.uint8)


def blur(images, sigma):
    from skimage.filters import gaussian

    if sigma == 0:
        return images
    out = [gaussian(im, sigma=sigma, channel_axis=-1, preserve_range=True) for im in images]
    return np.stack(out).round().astype(np.uint8)


def noise(images, std, seed=0):
    x = images + np.random.default_rng(seed).normal(0, std, images.shape)
    return np.clip(x, 0, 255).round().astype(np.uint8)


def write_folder(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"img{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A folder of 96 real crops (seed 1)."""
    return write_folder(tmp_path_factory.mktemp("reference"), crops(96, seed=1))


def meta_for(n, k=0):
    return [f"prompt {i}" for i in range(n)], [{"prompt_id": f"p{i}", "k": k, "seed": i} for i in range(n)]


def score(metric, images, batch=32):
    metric.setup()
    try:
        for s in range(0, len(images), batch):
            prompts, meta = meta_for(len(images[s:s + batch]))
            metric.update(images[s:s + batch], prompts, meta)
        return metric.compute()
    finally:
        metric.teardown()


def make(cls, inception, reference, **kw):
    return cls(reference=str(reference), inception_weights=str(inception), features=kw.pop("features", 64), **kw)


def test_identical_sets_give_zero(inception, tmp_path):
    real = crops(16, seed=8)
    folder = write_folder(tmp_path / "real", real)
    fid = score(make(FID, inception, folder), real)
    assert fid["n"] == fid["n_reference"] == 16
    assert abs(fid["fid"]) < 1e-3
    other = score(make(FID, inception, folder), crops(16, seed=2))
    assert other["fid"] > 100 * max(abs(fid["fid"]), 1e-6)  # the check can fail: other crops are far from 0


def levels_of(cls, inception, reference, images, degrade, levels):
    m = make(cls, inception, reference)
    m.setup()
    out = []
    for level in levels:
        m.reset()
        degraded = degrade(images, level)
        prompts, meta = meta_for(len(degraded))
        m.update(degraded, prompts, meta)
        out.append(m.compute()[cls.name])
    m.teardown()
    return out


@pytest.mark.parametrize("degrade, levels", [(blur, (0, 1, 2, 4)), (noise, (0, 24, 48, 96))])
def test_fid_and_kid_grow_with_degradation(inception, reference, degrade, levels):
    base = crops(32, seed=3)
    fids = levels_of(FID, inception, reference, base, degrade, levels)
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    kids = levels_of(KID, inception, reference, base, degrade, levels[::len(levels) - 1])
    assert kids[1] > kids[0] + 0.02 and kids[1] > 0.02, kids  # clean crops: KID ~ 0 (unbiased, can be < 0)


def test_agrees_with_cleanfid_on_the_same_features(inception, reference):
    """torchmetrics' statistics and distances on our features = clean-fid's on the same features."""
    from cleanfid.fid import frechet_distance, kernel_distance

    images = blur(crops(96, seed=4), 1)  # 96 > 64 features: full-rank covariances
    kid_metric = make(KID, inception, reference, subsets=3)
    kid_metric.setup()
    prompts, meta = meta_for(96)
    kid_metric.update(images, prompts, meta)
    fake = kid_metric.state()["fake_features"].numpy()  # the features the metrics computed
    real = kid_metric.reference_features()[0].double().numpy()
    kid = kid_metric.compute()["kid"]
    fid = score(make(FID, inception, reference), images)["fid"]
    want = frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), real.mean(0), np.cov(real, rowvar=False))
    assert fid > 1e-2 and abs(fid - want) <= 1e-3 * max(1.0, abs(want)), (fid, want)
    # 96 generated and 96 real: every subset is the whole set, so both KID estimates are exact
    want_kid = kernel_distance(fake, real, num_subsets=1, max_subset_size=96)
    assert abs(want_kid) > 1e-4 and abs(kid - want_kid) <= 1e-6 * abs(want_kid), (kid, want_kid)


# golden values: the seed-0 random Inception of the fixture, features=64, on kit_images() (recorded 2026-11-26)
# (KID is the unbiased estimate: with 6 real images it is negative here)
GOLDEN = {"fid": 1.5267498503149906, "kid": -0.12669555503473368}


def kit_images():
    return noise(crops(12, seed=5), 16)


def test_fid_passes_the_kit(inception, reference):
    from metric_kit import check_metric

    images = kit_images()[:10]
    prompts, meta = meta_for(len(images))
    ref = check_metric(lambda: make(FID, inception, reference), images, prompts, meta, golden=GOLDEN["fid"])
    assert ref.values["n"] == 10 and ref.values["n_reference"] == 96


def paired_meta(names):
    """12 images: 6 prompts x k in {0, 1}, each prompt row paired with a real image (relative path)."""
    prompts = [f"prompt {i % 6}" for i in range(12)]
    return prompts, [{"prompt_id": f"p{i % 6}", "k": i // 6, "seed": i, "file_name": names[i % 6]} for i in range(12)]


def test_kid_passes_the_kit_with_prompt_images(inception, tmp_path):
    """prompt_images: real features are part of the state (cat-merged across ranks); each prompt's
    real image counts once; the value equals a folder reference holding the same images."""
    from metric_kit import check_metric

    real = crops(6, seed=6)
    root = write_folder(tmp_path / "coco", real)
    prompts, meta = paired_meta([f"img{i:03d}.png" for i in range(6)])
    opts = dict(reference="prompt_images", image_root=str(root), inception_weights=str(inception), features=64)
    ref = check_metric(lambda: KID(subsets=5, **opts), kit_images(), prompts, meta, golden=GOLDEN["kid"])
    assert ref.values["n"] == 12 and ref.values["n_reference"] == 6
    for cls in (FID, KID):
        m = cls(**opts)
        m.update(kit_images(), prompts, meta)
        folder = make(cls, inception, root)  # the same 6 real images as a reference folder
        folder.update(kit_images(), prompts, meta)
        assert m.compute()[cls.name] == pytest.approx(folder.compute()[cls.name], rel=1e-9, abs=1e-12)
    with pytest.raises(FileNotFoundError, match="image_root"):
        FID(**{**opts, "image_root": str(tmp_path)}).update(kit_images()[:2], prompts[:2], meta[:2])
    with pytest.raises(ValueError, match="no 'file_name' field"):
        FID(**opts).update(kit_images()[:2], prompts[:2], [{"prompt_id": "p0", "k": 0}] * 2)


def test_reference_cache_hit_and_miss_by_key(inception, tmp_path, monkeypatch):
    monkeypatch.setenv("CDM_BENCH_CACHE", str(tmp_path / "cache"))
    reference = write_folder(tmp_path / "reference", crops(8, seed=1))
    first = make(FID, inception, reference)
    feats, hit = first.reference_features()
    assert not hit and feats.shape == (8, 64)
    again = make(KID, inception, reference)  # same extractor, weights, resize, resolution, images: shared
    feats2, hit = again.reference_features()
    assert hit and again.extractor is None and torch.equal(feats, feats2)  # the cache hit ran no network
    assert again.reference_cache_path() == first.reference_cache_path()
    misses = [make(FID, inception, reference, resize="legacy_tensorflow"),
              make(FID, inception, reference, reference_resolution=48),
              make(FID, inception, reference, features=192)]
    other_weights = save_random_inception(tmp_path / "other.pth", seed=1)
    misses.append(make(FID, other_weights, reference))
    changed = write_folder(tmp_path / "changed", crops(8, seed=1))
    write_folder(changed, [crops(1, seed=9)[0]])  # one image replaced
    misses.append(make(FID, inception, changed))
    paths = {first.reference_cache_path()}
    for m in misses:
        assert not m.reference_features()[1]
        paths.add(m.reference_cache_path())
    assert len(paths) == len(misses) + 1
    assert len(list((tmp_path / "cache" / "fid-reference").glob("*.safetensors"))) == len(paths)
    ident = [m.describe() for m in (first, *misses)]
    assert len({(d["inception_fingerprint"], d["resize"], d["features"], d["reference_resolution"],
                 d["reference_sha256"]) for d in ident}) == len(ident)


def test_missing_weights_and_reference_are_one_line_errors(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    default = FID(reference=str(reference))  # torch-fidelity's download cache under TORCH_HOME
    explicit = KID(reference=str(reference), inception_weights=str(tmp_path / "x.pth"))
    for metric, path in ((default, tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_FILE),
                         (explicit, tmp_path / "x.pth")):
        for step in (metric.check, metric.setup):
            with pytest.raises(MissingDependencyError) as err:
                step()
            msg = str(err.value)
            assert "\n" not in msg and f"{path} (not found)" in msg, msg
            assert INCEPTION_URL in msg and "option 'inception_weights'" in msg, msg
    with pytest.raises(MissingDependencyError, match="needs reference images: .*not found"):
        FID(reference=str(tmp_path / "nowhere"), inception_weights=__file__).check()
    with pytest.raises(ValueError, match="'reference' is required"):
        FID()
    with pytest.raises(ValueError, match="resize"):
        FID(reference=str(reference), resize="bilinear")


def test_default_weights_path_and_pool3(inception, reference, tmp_path, monkeypatch):
    """The file in torch's hub cache (where torch-fidelity keeps its download) loads with no option."""
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / INCEPTION_FILE).symlink_to(inception)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    metric = FID(reference=str(reference))
    metric.check()
    feats = metric.extract(crops(1, seed=7))
    assert feats.shape == (1, 2048) and feats.std() > 1e-3
    explicit = make(FID, inception, reference)
    assert metric.describe()["inception_fingerprint"] == explicit.describe()["inception_fingerprint"]


def test_clean_resize_enters_the_network_as_float(inception, reference):
    """At 299x299 clean-fid's resize is the identity, so the float path equals the network's own
    forward on the uint8 image; at other sizes the two resizes differ."""
    x299 = np.stack([np.asarray(Image.fromarray(im).resize((299, 299))) for im in crops(2, 7, 128)])
    clean, legacy = make(FID, inception, reference), make(FID, inception, reference, resize="legacy_tensorflow")
    torch.testing.assert_close(clean.extract(x299), legacy.extract(x299), rtol=1e-5, atol=1e-6)
    small = crops(2, 7, 128)
    assert (clean.extract(small) - legacy.extract(small)).abs().max() > 1e-3


def test_kid_subsets_do_not_depend_on_order_or_sharding():
    """With subset_size < n the subsets are random: drawn with a seeded generator from the features
    in a canonical order, so shuffled rows split into other chunks give the same value."""
    rng = np.random.default_rng(0)
    fake, real = torch.from_numpy(rng.random((50, 64))), torch.from_numpy(rng.random((40, 64)) + 0.05)

    def kid(states, seed=0):
        m = KID(reference="prompt_images", features=64, subsets=20, subset_size=10, seed=seed)
        m.load_states(states)
        return m.compute()["kid"]

    one = kid([{"fake_features": fake, "real_features": real}])
    p, q = torch.from_numpy(rng.permutation(50)), torch.from_numpy(rng.permutation(40))
    split = [{"fake_features": fake[p][:17], "real_features": real[q][:30]},
             {"fake_features": fake[p][17:], "real_features": real[q][30:]}]
    assert kid(split) == one
    assert kid(split, seed=1) != one  # the subsets are random: the check can fail
