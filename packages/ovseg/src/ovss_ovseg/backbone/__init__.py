"""Image backbones of the OVSeg mask proposal network, registered in detectron2's
``BACKBONE_REGISTRY`` when this package is imported: ``D2SwinTransformer`` (Swin-B model)
and ``build_resnet_deeplab_backbone`` (R101c model)."""

from ovss_ovseg.backbone import resnet_deeplab, swin

__all__ = ["resnet_deeplab", "swin"]
