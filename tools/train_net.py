#!/usr/bin/env python
"""Train / evaluate the R-FCN crater detector (Detectron2's train_net convention). The Trainer,
setup() and the checks live in ``detectron2_rfcn.engine``; this script only launches them.

    python tools/train_net.py --config-file configs/rfcn_timm_R_18_C4_1000it.yaml \\
        DATASETS.CRATER.DIR output/synthetic_tiles OUTPUT_DIR output/rfcn_synth
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/rfcn_synth/model_final.pth
    python tools/train_net.py --num-gpus 8 --config-file configs/rfcn_R_50_C4_1x.yaml ...
    python tools/train_net.py --num-gpus 2 ...      # no GPU: 2 CPU processes, DDP over gloo
"""
# detectron2_rfcn first: importing it silences Detectron2's import-time warnings.
from detectron2_rfcn.engine import main
from detectron2_rfcn.launch import launch  # Detectron2's on GPUs; N CPU processes with gloo without
from detectron2.engine import default_argument_parser  # noqa: I001

if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
