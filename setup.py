"""Build of vlmreward._C through CMake (CMakeLists.txt). Metadata lives in pyproject.toml.

Environment variables:
  VLMREWARD_CPU_ONLY=1      build the CPU kernels only, even where nvcc and a CUDA torch are present.
  VLMREWARD_REQUIRE_CUDA=1  fail the build unless the CUDA kernels are built (CI sets this).
  VLMREWARD_PTXAS_VERBOSE=1 print registers / spills of every CUDA kernel (nvcc -Xptxas -v).
  CMAKE_CUDA_ARCHITECTURES  GPU architectures in CMake's form ("80-real;90"); wins over TORCH_CUDA_ARCH_LIST.
  TORCH_CUDA_ARCH_LIST      GPU architectures in torch's form ("7.5;8.0;9.0+PTX"). Default: the architectures
                            the installed torch was built for (torch.cuda.get_arch_list()), SASS for each and
                            PTX of the newest.
  MAX_JOBS                  parallel compile jobs (default: number of CPUs).
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def find_nvcc():
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and Path(home, "bin", "nvcc").exists():
            return str(Path(home, "bin", "nvcc"))
    return shutil.which("nvcc")


def cuda_decision():
    """(build_cuda, nvcc path, reason) for this machine."""
    import torch

    if _flag("VLMREWARD_CPU_ONLY"):
        return False, None, "VLMREWARD_CPU_ONLY is set"
    if torch.version.cuda is None:
        return False, None, f"torch {torch.__version__} is a CPU-only build"
    nvcc = find_nvcc()
    if nvcc is None:
        return False, None, "nvcc not found (set CUDA_HOME)"
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"release (\d+)\.(\d+)", out)
    if not found or found.group(1) != torch.version.cuda.split(".")[0]:
        return False, nvcc, f"nvcc ({found and found.group(0)}) does not match torch's CUDA {torch.version.cuda}"
    return True, nvcc, f"nvcc {found.group(1)}.{found.group(2)} matches torch's CUDA {torch.version.cuda}"


def cuda_architectures() -> str:
    """CMAKE_CUDA_ARCHITECTURES for this build (see the module docstring)."""
    if os.environ.get("CMAKE_CUDA_ARCHITECTURES"):
        return os.environ["CMAKE_CUDA_ARCHITECTURES"]
    listed = os.environ.get("TORCH_CUDA_ARCH_LIST", "").replace(",", ";").replace(" ", ";")
    archs = []
    if listed.strip(";"):
        for entry in filter(None, listed.split(";")):
            ptx = entry.endswith("+PTX")
            found = re.fullmatch(r"(\d+)\.(\d+)([af]?)", entry.removesuffix("+PTX"))
            if not found:
                raise ValueError(f"TORCH_CUDA_ARCH_LIST: cannot read {entry!r} (expected e.g. 8.0, 9.0a or 8.6+PTX)")
            arch = found.group(1) + found.group(2) + found.group(3)
            archs.append(f"{arch}-real")
            if ptx:
                archs.append(f"{arch}-virtual")
        return ";".join(archs)
    import torch

    numbers = sorted({int(a.split("_")[1]) for a in torch.cuda.get_arch_list() if a.startswith("sm_")})
    if not numbers:
        raise RuntimeError("torch.cuda.get_arch_list() is empty; set TORCH_CUDA_ARCH_LIST or CMAKE_CUDA_ARCHITECTURES")
    return ";".join([f"{n}-real" for n in numbers[:-1]] + [str(numbers[-1])])  # the newest: SASS + PTX


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11
        import torch

        with_cuda, nvcc, reason = cuda_decision()
        print(f"vlmreward: CUDA kernels {'ON' if with_cuda else 'OFF'} ({reason})", flush=True)
        if not with_cuda and _flag("VLMREWARD_REQUIRE_CUDA"):
            raise RuntimeError(f"VLMREWARD_REQUIRE_CUDA is set but the CUDA kernels cannot be built: {reason}")
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DTORCH_DIR={Path(torch.__file__).parent}",
            f"-DVLMREWARD_WITH_CUDA={'ON' if with_cuda else 'OFF'}",
            f"-DVLMREWARD_PTXAS_VERBOSE={'ON' if _flag('VLMREWARD_PTXAS_VERBOSE') else 'OFF'}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        if with_cuda:
            args.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
            archs = cuda_architectures()
            print(f"vlmreward: CUDA architectures {archs}", flush=True)
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        subprocess.check_call(["cmake", str(ROOT), *args], cwd=build_dir)
        subprocess.check_call(["cmake", "--build", ".", "--parallel", jobs], cwd=build_dir)


if __name__ == "__main__":  # setuptools' build backend runs this file as __main__; tests import it
    setup(ext_modules=[Extension("vlmreward._C", sources=[])], cmdclass={"build_ext": CMakeBuild})
