"""The CUDA architectures of the build: setup.py's choice, and what the built fatbin holds (no GPU needed)."""
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from vlmreward import _C

SETUP = Path(__file__).resolve().parents[1] / "setup.py"


@pytest.fixture
def setup_module(monkeypatch):
    if not SETUP.exists():
        pytest.skip("setup.py not next to tests/")
    monkeypatch.delenv("CMAKE_CUDA_ARCHITECTURES", raising=False)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    spec = importlib.util.spec_from_file_location("vlmreward_setup", SETUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # __name__ != "__main__": defines the helpers, runs no build
    return module


def _torch_default():
    numbers = sorted(int(a[3:]) for a in torch.cuda.get_arch_list() if a.startswith("sm_"))
    return ";".join([f"{n}-real" for n in numbers[:-1]] + [str(numbers[-1])])


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch lists no architectures")
def test_default_is_torchs_own_list(setup_module):
    archs = setup_module.cuda_architectures()
    assert archs == _torch_default()
    assert "75-real" in archs.split(";")  # torch 2.14.1+cu130 supports sm_75: the build must not drop it


def test_torch_cuda_arch_list_is_honoured(setup_module, monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.5;8.0 9.0a;12.0+PTX")
    assert setup_module.cuda_architectures() == "75-real;80-real;90a-real;120-real;120-virtual"
    monkeypatch.setenv("CMAKE_CUDA_ARCHITECTURES", "86-real")  # CMake's own variable wins
    assert setup_module.cuda_architectures() == "86-real"
    monkeypatch.delenv("CMAKE_CUDA_ARCHITECTURES")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "sm_80")
    with pytest.raises(ValueError, match="sm_80"):
        setup_module.cuda_architectures()


def _expected(archs: str):
    """(SASS set, PTX set) of a CMAKE_CUDA_ARCHITECTURES value: N-real = SASS, N-virtual = PTX, N = both."""
    sass, ptx = set(), set()
    for entry in filter(None, archs.replace(",", ";").split(";")):
        name, _, kind = entry.partition("-")
        if kind in ("", "real"):
            sass.add(name)
        if kind in ("", "virtual"):
            ptx.add(name)
    return sass, ptx


def _listed(flag, so):
    out = subprocess.run(["cuobjdump", flag, so], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"\.sm_(\d+[af]?)\.(?:cubin|ptx)", out))


@pytest.mark.skipif(not _C.cuda_built, reason="this build has no CUDA kernels")
def test_fatbin_holds_the_requested_architectures():
    candidates = [shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"]
    triton = importlib.util.find_spec("triton")  # torch's CUDA wheels ship triton, which bundles cuobjdump
    if triton is not None and triton.submodule_search_locations:
        candidates.append(os.path.join(triton.submodule_search_locations[0], "backends/nvidia/bin/cuobjdump"))
    cuobjdump = next((c for c in candidates if c and os.path.exists(c)), None)
    if cuobjdump is None:
        pytest.skip("cuobjdump not found")
    os.environ["PATH"] = os.path.dirname(cuobjdump) + os.pathsep + os.environ["PATH"]
    sass, ptx = _expected(_C.cuda_architectures)
    assert _listed("--list-elf", _C.__file__) == sass
    assert _listed("--list-ptx", _C.__file__) == ptx
    if not os.environ.get("CMAKE_CUDA_ARCHITECTURES") and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        assert _C.cuda_architectures.replace(",", ";") == _torch_default()
