#!/usr/bin/env python
"""Install detectron2 into the running interpreter's environment, patched for
torch 2.14 / NumPy 2 / Pillow 13. Idempotent: an importable detectron2 is kept as it is.

detectron2 is not on PyPI. ``pb1-detectron2==0.6`` is an sdist whose Python sources are
byte-identical to upstream detectron2 v0.6 but which ships none of the C++ sources, so
its own ``setup.py`` cannot build. Each patch below says why it is needed.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "pb1-detectron2==0.6"


def already_installed() -> bool:
    # collect_env_info is what Detectron2's default_setup logs first: it must work too.
    probe = ("import detectron2, detectron2.layers, detectron2.modeling; "
             "from detectron2.utils.collect_env import collect_env_info; collect_env_info()")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def patch(src: Path) -> None:
    setup_py = src / "setup.py"
    text = setup_py.read_text()
    # The sdist has no csrc/: building detectron2._C fails. R-FCN needs none of its ops
    # (torchvision provides ps_roi_align, roi_align and batched_nms).
    text = text.replace("ext_modules=get_extensions(),", "ext_modules=[],")
    # black==21.4b2 does not install on Python 3.11; any black serves LazyConfig.save.
    text = text.replace('"black==21.4b2",', '"black",')
    setup_py.write_text(text)

    # detectron2.layers imports ``from detectron2 import _C`` at import time (rotated boxes,
    # deformable conv): a placeholder module lets the import succeed and makes any use of
    # those C++ ops fail with a clear message. It answers the build questions that
    # collect_env_info (logged by default_setup) asks.
    (src / "detectron2" / "_C.py").write_text(
        '"""Placeholder for detectron2\'s C++ extension, which this build does not include."""\n\n\n'
        "def get_compiler_version():\n    return 'none: built without C++ ops'\n\n\n"
        "def get_cuda_version():\n    return 'none: built without C++ ops'\n\n\n"
        "def has_cuda():\n    return False\n\n\n"
        "def __getattr__(name):\n"
        "    raise NotImplementedError(\n"
        "        f'detectron2._C.{name} is not available: this detectron2 was built without its C++ ops '\n"
        "        '(rotated boxes, deformable conv, fast COCO eval). Use use_fast_impl=False for COCO evaluation.'\n"
        "    )\n"
    )

    # Image.LINEAR (an alias of BILINEAR) was removed in Pillow 10; it is evaluated as a
    # default argument at import time.
    transform_py = src / "detectron2" / "data" / "transforms" / "transform.py"
    transform_py.write_text(transform_py.read_text().replace("Image.LINEAR", "Image.BILINEAR"))

    # np.bool / np.int / np.float were removed in NumPy 1.24: use the builtins.
    alias = re.compile(r"\bnp\.(bool|int|float)\b(?!_)")
    for py in (src / "detectron2").rglob("*.py"):
        old = py.read_text()
        new = alias.sub(r"\1", old)
        if new != old:
            py.write_text(new)


def main() -> int:
    if already_installed():
        print("[install_detectron2] detectron2 already importable; keeping it")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        # --no-build-isolation: the sdist's setup.py imports torch to compute metadata.
        pip("download", "--quiet", "--no-deps", "--no-build-isolation", SDIST, "-d", tmp)
        archive = next(tmp_path.glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_path, filter="data")
        src = next(p for p in tmp_path.iterdir() if p.is_dir())
        patch(src)
        pip("install", "--quiet", "--no-build-isolation", str(src))
    if not already_installed():
        print("[install_detectron2] detectron2 still does not import", file=sys.stderr)
        return 1
    print("[install_detectron2] detectron2 installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
