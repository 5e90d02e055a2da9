#!/usr/bin/env python
"""Train the crater age network (configs/age_net/*.yaml); the logic lives in age_net.engine.

    python tools/train_age_net.py --config-file configs/age_net/agenet_R18_S32_cpu.yaml --world data/world
    python tools/train_age_net.py --config-file configs/age_net/agenet_mt_R18_S32_cpu.yaml --world data/world \
        DATA.LABEL_FRACTION 0.1 TRIALS 5 OUTPUT_DIR output/age_mt10
"""
import sys

from age_net.engine import main

if __name__ == "__main__":
    sys.exit(main())
