import pytest
import torch

from megabit.utils import resolve_device


def test_resolve_device_auto_and_explicit():
    dev = resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == dev
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_rejects_bad_names():
    with pytest.raises(ValueError, match="unknown device|unsupported device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("not a device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
