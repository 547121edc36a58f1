"""SAN configuration: detectron2's ``CfgNode`` with the original SAN keys and defaults.

The keys are those of the original configs, so that their YAML files merge unchanged;
``get_config`` resolves a config file and command-line style overrides into a frozen node.
Training keys are declared (a config that sets them must merge) but only the inference
keys are read by this package.
"""

from __future__ import annotations

from pathlib import Path

from detectron2.config import CfgNode, get_cfg

from ovss_common.detectron2_keys import add_deeplab_keys, load_config
from ovss_common.mask_former_keys import add_mask_former_data_keys, add_wandb_keys

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def add_san_keys(cfg: CfgNode) -> None:
    """The ``MODEL.SAN`` / ``MODEL.SIDE_ADAPTER`` keys and the training keys SAN adds."""
    add_mask_former_data_keys(cfg)
    cfg.SOLVER.WEIGHT_DECAY_EMBED_GROUP = [
        "absolute_pos_embed",
        "positional_embedding",
        "pos_embed",
        "query_embed",
        "relative_position_bias_table",
    ]
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    cfg.SOLVER.CLIP_MULTIPLIER = 1.0

    san = cfg.MODEL.SAN = CfgNode()
    san.NO_OBJECT_WEIGHT = 0.1
    san.CLASS_WEIGHT = 2.0
    san.DICE_WEIGHT = 5.0
    san.MASK_WEIGHT = 5.0
    san.TRAIN_NUM_POINTS = 112 * 112
    san.NUM_CLASSES = 171
    san.OVERSAMPLE_RATIO = 3.0
    san.IMPORTANCE_SAMPLE_RATIO = 0.75
    san.CLIP_MODEL_NAME = "ViT-B/16"
    san.CLIP_PRETRAINED_NAME = "openai"
    san.CLIP_TEMPLATE_SET = "vild"
    san.FEATURE_LAST_LAYER_IDX = 9
    san.CLIP_FROZEN_EXCLUDE = ["positional_embedding"]
    san.CLIP_DEEPER_FROZEN_EXCLUDE = []
    san.REC_CROSS_ATTN = False
    san.REC_DOWNSAMPLE_METHOD = "max"
    san.SOS_TOKEN_FORMAT = "cls_token"
    san.SIZE_DIVISIBILITY = 32
    san.ASYMETRIC_INPUT = True
    san.CLIP_RESOLUTION = 0.5
    san.SEM_SEG_POSTPROCESS_BEFORE_INFERENCE = True

    side = cfg.MODEL.SIDE_ADAPTER = CfgNode()
    side.NAME = "RegionwiseSideAdapterNetwork"
    side.VIT_NAME = "vit_w240n6d8_patch16"
    side.PRETRAINED = False
    side.IMAGE_SIZE = 640
    side.DROP_PATH_RATE = 0.0
    side.NUM_QUERIES = 100
    side.FUSION_TYPE = "add"
    side.FUSION_MAP = ["0->0", "3->1", "6->2", "9->3"]
    side.DEEP_SUPERVISION_IDXS = [7, 8]
    bias = side.ATTN_BIAS = CfgNode()
    bias.NUM_HEADS = 12
    bias.NUM_LAYERS = 1
    bias.EMBED_CHANNELS = 256
    bias.MLP_CHANNELS = 256
    bias.MLP_NUM_LAYERS = 3
    bias.RESCALE_ATTN_BIAS = True

    add_wandb_keys(cfg, "san")
    cfg.MODEL.FLASH = False


def default_config() -> CfgNode:
    """detectron2's defaults plus the DeepLab and SAN keys (unfrozen)."""
    cfg = get_cfg()
    add_deeplab_keys(cfg)
    add_san_keys(cfg)
    return cfg


def get_config(path: str | Path, overrides: list[str] | None = None) -> CfgNode:
    """Load a SAN YAML config (``_BASE_`` chains allowed) plus ``KEY VALUE`` overrides, frozen."""
    return load_config(default_config(), path, overrides)
