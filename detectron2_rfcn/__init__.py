"""detectron2_rfcn: R-FCN crater detector as a Detectron2 plugin."""
