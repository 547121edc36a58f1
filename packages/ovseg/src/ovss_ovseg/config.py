"""OVSeg configuration: detectron2's ``CfgNode`` with the original OVSeg keys and defaults.

The keys are those of the original configs (MaskFormer keys, Swin keys, the CLIP adapter's
keys and OVSeg's own test options), so that their YAML files merge unchanged. Training keys
are declared, but only the inference keys are read by this package.
"""

from __future__ import annotations

from pathlib import Path

from detectron2.config import CfgNode, get_cfg

from ovss_common.detectron2_keys import add_deeplab_keys, load_config
from ovss_common.mask_former_keys import add_mask_former_data_keys, add_wandb_keys

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def add_mask_former_keys(cfg: CfgNode) -> None:
    """MaskFormer's keys (data, solver, transformer, pixel decoder, Swin)."""
    add_mask_former_data_keys(cfg)
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1

    former = cfg.MODEL.MASK_FORMER = CfgNode()
    former.DEEP_SUPERVISION = True
    former.NO_OBJECT_WEIGHT = 0.1
    former.DICE_WEIGHT = 1.0
    former.MASK_WEIGHT = 20.0
    former.NHEADS = 8
    former.DROPOUT = 0.1
    former.DIM_FEEDFORWARD = 2048
    former.ENC_LAYERS = 0
    former.DEC_LAYERS = 6
    former.PRE_NORM = False
    former.HIDDEN_DIM = 256
    former.NUM_OBJECT_QUERIES = 100
    former.TRANSFORMER_IN_FEATURE = "res5"
    former.ENFORCE_INPUT_PROJ = False
    former.TEST = CfgNode()
    former.TEST.PANOPTIC_ON = False
    former.TEST.OBJECT_MASK_THRESHOLD = 0.0
    former.TEST.OVERLAP_THRESHOLD = 0.0
    former.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
    former.SIZE_DIVISIBILITY = 32

    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"

    swin = cfg.MODEL.SWIN = CfgNode()
    swin.PRETRAIN_IMG_SIZE = 224
    swin.PATCH_SIZE = 4
    swin.EMBED_DIM = 96
    swin.DEPTHS = [2, 2, 6, 2]
    swin.NUM_HEADS = [3, 6, 12, 24]
    swin.WINDOW_SIZE = 7
    swin.MLP_RATIO = 4.0
    swin.QKV_BIAS = True
    swin.QK_SCALE = None
    swin.NORM_INDICES = None
    swin.PROJECTION = False
    swin.PROJECT_DIM = 256
    swin.DROP_RATE = 0.0
    swin.ATTN_DROP_RATE = 0.0
    swin.DROP_PATH_RATE = 0.3
    swin.APE = False
    swin.PATCH_NORM = True
    swin.OUT_FEATURES = ["res2", "res3", "res4", "res5"]


def add_ovseg_keys(cfg: CfgNode) -> None:
    """OVSeg's own keys: test options, the embedding head and the CLIP adapter."""
    cfg.TEST.SLIDING_WINDOW = False
    cfg.TEST.SLIDING_TILE_SIZE = 224
    cfg.TEST.SLIDING_OVERLAP = 2 / 3.0
    cfg.TEST.DENSE_CRF = False
    cfg.DATASETS.SAMPLE_PER_CLASS = -1
    cfg.DATASETS.SAMPLE_SEED = 0
    cfg.MODEL.SEM_SEG_HEAD.EMBEDDING_DIM = 512
    cfg.MODEL.SEM_SEG_HEAD.EMBED_HIDDEN_DIM = 1024
    cfg.MODEL.SEM_SEG_HEAD.EMBED_LAYERS = 2

    adapter = cfg.MODEL.CLIP_ADAPTER = CfgNode()
    adapter.TEXT_TEMPLATES = "vild"
    adapter.PREDEFINED_PROMPT_TEMPLATES = ["a photo of a {}."]
    adapter.PROMPT_CHECKPOINT = ""
    adapter.CLIP_MODEL_NAME = "ViT-B/16"
    adapter.MASK_FILL = "mean"
    adapter.MASK_EXPAND_RATIO = 1.0
    adapter.MASK_THR = 0.4
    adapter.MASK_MATTING = False
    adapter.REGION_RESIZED = True
    adapter.CLIP_ENSEMBLE = True
    adapter.CLIP_ENSEMBLE_WEIGHT = 0.7
    adapter.MASK_PROMPT_DEPTH = 3
    adapter.MASK_PROMPT_FWD = False

    add_wandb_keys(cfg, "open_vocab_seg")


def default_config() -> CfgNode:
    """detectron2's defaults plus the DeepLab, MaskFormer and OVSeg keys (unfrozen)."""
    cfg = get_cfg()
    add_deeplab_keys(cfg)
    add_mask_former_keys(cfg)
    add_ovseg_keys(cfg)
    return cfg


def get_config(path: str | Path, overrides: list[str] | None = None) -> CfgNode:
    """Load a OVSeg YAML config (``_BASE_`` chains allowed) plus ``KEY VALUE`` overrides, frozen."""
    return load_config(default_config(), path, overrides)
