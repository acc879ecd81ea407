"""Fixtures of the metric tests: a random VGGish saved as torchvggish's released checkpoint, and the tiny
MusicGen of the LM tests (for `evaluate --objective`)."""

import pytest
import torch
from torchvggish.torchvggish import _vgg

from tests.lm.conftest import hf_musicgen  # noqa: F401 (fixture)


@pytest.fixture(scope="session")
def vggish_file(tmp_path_factory):
    """(path, torchvggish `VGG`): random weights at real size (torch's init, doubled to keep the signal
    O(1) through nine layers), saved as the released `vggish-10086976.pth` is."""
    torch.manual_seed(3)
    model = _vgg(postprocess=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    path = tmp_path_factory.mktemp("vggish") / "vggish.pth"
    torch.save(model.state_dict(), path)
    return path, model
