"""Our safetensors writer and reader against the reference `safetensors` library, both ways.

The C++ side lives in tests/io/test_safetensors.cpp (Safetensors.WritesInteropFixture and
Safetensors.ReadsInteropFixture); both sides build the same tensors from the same formulas."""
import os
import subprocess

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

METADATA = {"format": "pt", "source": "exfusion interop"}


def interop_tensors():
    """Keep in step with interop_tensors() in test_safetensors.cpp."""
    f = lambda n: torch.arange(n, dtype=torch.float64)
    i = lambda n: torch.arange(n, dtype=torch.int64)
    return {
        "f64": (f(12) / 8 - 0.5).reshape(3, 4),
        "f32": ((f(24) - 12) * 0.25).reshape(2, 3, 4).to(torch.float32),
        "f16": (f(10) * 0.5 - 2).to(torch.float16),
        "bf16": (f(16) * 0.125 - 1).reshape(4, 4).to(torch.bfloat16),
        "i64": i(6) * 1000000007 - 3,
        "i32": (i(8) - 4).to(torch.int32),
        "i16": (i(5) * 300 - 600).to(torch.int16),
        "i8": (i(10) * 25 - 125).to(torch.int8),
        "u8": i(256).reshape(16, 16).to(torch.uint8),
        "bool": i(7) % 3 == 0,
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }


def run_gtest(binary, test, interop_dir):
    result = subprocess.run(
        [str(binary), f"--gtest_filter=Safetensors.{test}"],
        env={**os.environ, "EXFUSION_INTEROP_DIR": str(interop_dir)},
        capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A filter that matches nothing also exits 0: make sure the test really ran.
    assert "[  PASSED  ] 1 test." in output, output


def test_reference_library_reads_our_file(tests_bin, tmp_path):
    run_gtest(tests_bin, "WritesInteropFixture", tmp_path)
    path = tmp_path / "cpp_written.safetensors"
    loaded = load_file(str(path))
    expected = interop_tensors()
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == METADATA


def test_we_read_the_reference_librarys_file(tests_bin, tmp_path):
    save_file(interop_tensors(), str(tmp_path / "py_written.safetensors"), metadata=METADATA)
    run_gtest(tests_bin, "ReadsInteropFixture", tmp_path)
