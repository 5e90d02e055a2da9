"""Pretrained weights from local files, converted for R-FCN (transfer learning).

Sources: a torchvision or timm ResNet ``state_dict`` (ImageNet, RGB), or a crater model of
ours trained on other inputs (e.g. the synthetic world's dom/dem/slope tiles, to fine-tune on
a single-band NAC image). The output is a Detectron2 checkpoint (``{"model": ...}``) whose
names match our backbones exactly, with the first conv adapted to the target channels:

* channels known by name on both sides: each target channel takes the filter slice of the
  source channel with the same name; a channel the source never saw gets the mean slice
  (so it starts as "some intensity"), scaled so the summed response keeps its size;
* names unknown: timm's rule (1 channel: sum of the RGB slices; N: cycle and rescale by 3/N).

    python -m detectron2_rfcn.weights resnet50-torchvision.pth output/R50_in4.pth \\
        --to d2 --dst-channels dom,dem,slope,hillshade
    python -m detectron2_rfcn.weights output/rfcn_synth/model_final.pth output/synth_to_nac.pth \\
        --to ours --src-channels dom,dem,slope --dst-channels dom
"""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

__all__ = ["adapt_first_conv", "torchvision_resnet_to_d2", "convert_weights", "FIRST_CONV_KEYS"]

logger = logging.getLogger(__name__)

#: Where the first conv lives in each kind of state dict.
FIRST_CONV_KEYS = ("backbone.stem.conv1.weight", "backbone.trunk.conv1.weight", "stem.conv1.weight", "conv1.weight")


def adapt_first_conv(weight: torch.Tensor, dst_in: int, src_channels: Optional[Sequence[str]] = None,
                     dst_channels: Optional[Sequence[str]] = None) -> torch.Tensor:
    """A first-conv weight (O, C_src, kh, kw) adapted to ``dst_in`` input channels."""
    src_in = weight.shape[1]
    if src_channels and dst_channels:
        if len(src_channels) != src_in or len(dst_channels) != dst_in:
            raise ValueError(f"channel names {list(src_channels)} -> {list(dst_channels)} do not match the "
                             f"weight's {src_in} inputs and the model's {dst_in}")
        mean = weight.mean(dim=1)
        slices = [weight[:, list(src_channels).index(c)] if c in src_channels else mean for c in dst_channels]
        out = torch.stack(slices, dim=1)
        matched = sum(c in src_channels for c in dst_channels)
        if matched < src_in:
            # Fewer of the source's channels feed the conv: keep the summed response comparable.
            out = out * (src_in / max(dst_in, 1))
        return out.contiguous()
    if dst_in == src_in:
        return weight
    if dst_in == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-dst_in // src_in)
    return (weight.repeat(1, reps, 1, 1)[:, :dst_in] * (src_in / dst_in)).contiguous()


def torchvision_resnet_to_d2(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torchvision/timm ResNet names -> Detectron2 ``ResNet`` names under ``backbone.``."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        n = re.sub(r"^conv1\.", "stem.conv1.", k)
        n = re.sub(r"^bn1\.", "stem.conv1.norm.", n)
        n = re.sub(r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}.", n)
        n = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", n)
        n = n.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
        out["backbone." + n] = v
    return out


def convert_weights(src_path, dst_path, *, to: str, dst_in: int, src_channels: Optional[List[str]] = None,
                    dst_channels: Optional[List[str]] = None) -> Path:
    """Convert ``src_path`` for a backbone kind ``to`` ("d2": Detectron2 ResNet, "timm":
    TimmBackbone, "ours": an R-FCN checkpoint as is) and adapt its first conv to ``dst_in``
    channels. Only the model is kept (no optimizer/iteration: fine-tuning starts at 0)."""
    loaded = torch.load(src_path, map_location="cpu", weights_only=False)
    state = loaded.get("model", loaded.get("state_dict", loaded)) if isinstance(loaded, dict) else loaded
    state = {k: torch.as_tensor(v) for k, v in state.items()}
    if to == "d2":
        state = torchvision_resnet_to_d2(state)
    elif to == "timm":
        state = {"backbone.trunk." + k: v for k, v in state.items()
                 if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    elif to != "ours":
        raise ValueError(f"--to must be d2, timm or ours, got {to!r}")
    key = next((k for k in FIRST_CONV_KEYS if k in state), None)
    if key is None:
        raise KeyError(f"{src_path}: no first conv among {FIRST_CONV_KEYS}")
    state[key] = adapt_first_conv(state[key], dst_in, src_channels, dst_channels)
    dst = Path(dst_path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "__author__": f"detectron2_rfcn.weights from {Path(src_path).name}"}, dst)
    logger.info("wrote %s (%d tensors, first conv %s -> %s)", dst, len(state), key, tuple(state[key].shape))
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Convert local pretrained weights for R-FCN (first conv adapted).")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", choices=["d2", "timm", "ours"], required=True,
                   help="d2: torchvision ResNet -> build_resnet_backbone; timm: timm ResNet -> build_timm_backbone; "
                        "ours: an R-FCN checkpoint (only the first conv changes)")
    p.add_argument("--src-channels", default="", help="comma-separated names of the source's input channels")
    p.add_argument("--dst-channels", default="", help="comma-separated names of the target's input channels")
    p.add_argument("--dst-in", type=int, default=0, help="target channel count (default: len(--dst-channels))")
    a = p.parse_args(argv)
    src = [c for c in a.src_channels.split(",") if c] or None
    dst = [c for c in a.dst_channels.split(",") if c] or None
    dst_in = a.dst_in or (len(dst) if dst else 3)
    logging.basicConfig(level=logging.INFO)
    convert_weights(a.src, a.dst, to=a.to, dst_in=dst_in, src_channels=src, dst_channels=dst)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
