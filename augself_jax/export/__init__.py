"""A pretrained backbone in PyTorch's layouts: torchvision, timm and detectron2.

  python -m augself_jax.export --workdir=W [--step N|best] --format=F --out=FILE
      [--momentum_encoder]          (also the `augself-export` command)

- torchvision (ResNet-18/50): a safetensors file of torchvision's `resnet18`/`resnet50`
  state dict without `fc` (`to_torchvision.py`);
- timm (ViT-S/16, ViT-B/16): a safetensors file of timm's `vit_small_patch16_224` /
  `vit_base_patch16_224` state dict without the head (`to_timm.py`);
- detectron2 (ResNets with the ImageNet stem): the pickle MoCo's
  `convert-pretrain-to-detectron2.py` writes (`to_detectron2.py`).

The weights are the backbone's parameters and batch statistics from the checkpoint, or its
momentum encoder's (`--momentum_encoder`, for MoCo, MoCo v3 and BYOL). Writing needs NumPy
and safetensors only, no PyTorch. This module imports nothing heavy, so a bad flag is
refused at once (`command.py`).
"""
