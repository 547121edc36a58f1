"""SAN training: the original recipe (data mapper, Hungarian matching, point-sampled mask
losses, AdamW with full-model clipping and a poly schedule) on torch.distributed.

``python -m ovss_san.training --request RUN/train_request.json`` is the trainer that
``ovss train --method san`` starts (``ovss_common.training`` describes the request).
"""
