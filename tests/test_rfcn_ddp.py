"""Training across processes: ``tools/train_net.py --num-gpus 2`` on a machine without GPUs runs
DistributedDataParallel over two CPU processes (gloo), through ``detectron2_rfcn.launch``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toy_tiles import write_toy_crater_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU (gloo) path runs where there is no GPU")
def test_two_cpu_processes_train_the_quick_schedule_and_save_a_checkpoint(tmp_path):
    data = write_toy_crater_dataset(tmp_path / "tiles", tiles_per_split={"train": 4, "val": 1, "test": 2})
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--num-gpus", "2", "--dist-url", "auto",
           "--config-file", str(REPO / "configs/quick_schedules/rfcn_timm_R_18_instant_test.yaml"),
           "DATASETS.CRATER.DIR", str(data), "DATASETS.CRATER.NAME_PREFIX", "ddp",
           "DATASETS.TRAIN", "('ddp_train',)", "DATASETS.TEST", "('ddp_test',)",
           "SOLVER.MAX_ITER", "4", "SOLVER.IMS_PER_BATCH", "2", "OUTPUT_DIR", str(out),
           "TEST.CRATER_EVAL.COCO_AP", "False"]
    # A process waiting forever for another's gradients is the failure this guards against.
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log and "Rank of current process: 0" in log
    assert "Rank of current process: 1" in (out / "log.txt.rank1").read_text()
    # Both processes trained every iteration: the last one's losses were gathered and written.
    import json

    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines() if line.strip()]
    losses = {m["iteration"]: m["total_loss"] for m in metrics if "total_loss" in m}
    assert max(losses) == 3 and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
