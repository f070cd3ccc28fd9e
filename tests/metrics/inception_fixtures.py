"""torch-fidelity's Inception-v3 with random weights, saved as a local weights file (no download)."""

import torch


def save_random_inception(path, seed=0):
    """torch-fidelity's FeatureExtractorInceptionV3 with random (He-initialised) weights, saved."""
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    class Unloaded(tfi.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return super().load_state_dict(state_dict, strict=False)

    torch.manual_seed(seed)
    with mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: {}):  # no download: empty weights
        net = Unloaded("inception-v3-compat", ["2048"])
    for m in net.modules():  # the default init makes features vanish with depth; He init keeps them O(1)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path
