"""Evaluate a saved model on a data set, and predict classes of image files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..checkpoint import load_model, tensors_from_json
from ..config import DataConfig, config_from_dict
from ..data.source import InMemorySource
from ..errors import ReslearnError
from .data import IN_MEMORY, _load_arrays
from .task import ClassificationTask, topk_wrong

__all__ = ["evaluate_checkpoint", "predict_images"]


def _normalizer(doc: dict[str, Any], device):
    from ..data.augment import Normalizer

    if not doc.get("normalizer"):
        raise ReslearnError("the checkpoint carries no input normaliser statistics")
    return Normalizer.from_state_dict(tensors_from_json(doc["normalizer"])).to(device)


def _data_cfg(doc: dict[str, Any], *, root: str | None, dataset: str | None) -> DataConfig:
    cfg = config_from_dict(doc["config"]).data if doc.get("config") else DataConfig(name=doc.get("data", "cifar10"))
    cfg = replace(cfg, name=dataset or cfg.name, train_subset=0, download=False)
    if root:
        cfg = replace(cfg, root=root)
    return cfg


@torch.no_grad()
def evaluate_checkpoint(path: str | Path, *, root: str | None = None, dataset: str | None = None,
                        split: str = "test", ten_crop: bool = False, multi_scale: bool = False,
                        batch_size: int = 256, device: str = "cpu", limit: int = 0) -> dict[str, Any]:
    """Top-1/top-5 error of the model in ``path`` on ``split`` of its data set (or another)."""
    dev = torch.device(device)
    model, doc = load_model(path, device=dev)
    cfg = _data_cfg(doc, root=root, dataset=dataset)
    if cfg.name in IN_MEMORY:
        if ten_crop or multi_scale:
            raise ReslearnError("--ten-crop/--multi-scale are for ImageFolder (ImageNet-style) data")
        train, test = _load_arrays(cfg)
        if split == "val":
            from ..data.arrays import train_val_split

            if not cfg.val_size:
                raise ReslearnError("this run held out no validation split (data.val_size=0)")
            _, ds = train_val_split(train, val_size=cfg.val_size, seed=cfg.split_seed)
        else:
            ds = test
        if limit:
            ds = ds.subset(torch.arange(min(limit, len(ds))))
        if ds.images.shape[1] != doc["in_chans"]:
            raise ReslearnError(f"the model takes {doc['in_chans']} channels; {cfg.name} has {ds.images.shape[1]}")
        src = InMemorySource(ds.images, ds.labels, batch_size=batch_size, normalize=_normalizer(doc, dev), device=dev)
        metrics = ClassificationTask().evaluate(model, src)
        mode = "single"
    else:
        metrics, mode = _eval_folder(model, doc, cfg, split, ten_crop, multi_scale, batch_size, dev, limit)
    return {"checkpoint": str(path), "model": doc["model"], "data": cfg.name, "split": split, "mode": mode, **metrics}


def _eval_folder(model, doc, cfg, split, ten_crop, multi_scale, batch_size, dev, limit):
    from ..data import testtime, transforms
    from ..data.folder import ImageFolderDataset

    crop = doc["image_size"][0]
    resize = round(crop * 256 / 224)
    if ten_crop:
        tf, mode = transforms.ten_crop_transform(crop=crop, resize=resize), "10-crop"
    elif multi_scale:
        tf, mode = None, "multi-scale"
    else:
        tf, mode = transforms.imagenet_eval_transform(crop=crop, resize=resize), "center-crop"
    ds = ImageFolderDataset(cfg.root, split=split, transform=tf, on_error=cfg.on_bad_file)
    idx = range(min(limit, len(ds))) if limit else range(len(ds))
    w1 = w5 = n = 0
    loss = 0.0
    bs = 1 if multi_scale else max(1, batch_size // (10 if ten_crop else 1))
    for start in range(0, len(idx), bs):
        items = [ds[i] for i in idx[start : start + bs]]
        y = torch.tensor([int(t) for _, t in items], device=dev)
        if ten_crop:
            probs = testtime.predict_ten_crop(model, torch.stack([x for x, _ in items]).to(dev))
        elif multi_scale:
            img = items[0][0]
            norm = transforms.imagenet_eval_transform(crop=crop, resize=resize, normalize_only=True)
            probs = testtime.predict_multi_scale(model, [norm(s).to(dev) for s in transforms.multi_scale_inputs(img)])
        else:
            probs = F.softmax(model(torch.stack([x for x, _ in items]).to(dev)).float(), -1)
        loss += float(F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum"))
        w1 += topk_wrong(probs, y, 1)
        w5 += topk_wrong(probs, y, 5)
        n += len(y)
    n = max(n, 1)
    return {"loss": loss / n, "top1_err": 100 * w1 / n, "top5_err": 100 * w5 / n, "n": n}, mode


@torch.no_grad()
def predict_images(path: str | Path, images: Sequence[str | Path], *, topk: int = 5,
                   device: str = "cpu") -> list[dict[str, Any]]:
    """Top-``topk`` classes with probabilities for each image file."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    dev = torch.device(device)
    model, doc = load_model(path, device=dev)
    norm = _normalizer(doc, dev)
    classes = doc.get("classes") or [str(i) for i in range(model.num_classes)]
    h, w = doc["image_size"]
    mode = ImageReadMode.GRAY if doc["in_chans"] == 1 else ImageReadMode.RGB
    out = []
    for img_path in images:
        p = Path(img_path)
        if not p.is_file():
            raise ReslearnError(f"image {p} not found")
        try:
            img = decode_image(str(p), mode=mode)
        except Exception as e:
            raise ReslearnError(f"cannot decode image {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        # Shorter side to the training size, then centre crop: the test-time view of the training data.
        img = TF.center_crop(TF.resize(img, [min(h, w)], antialias=True), [h, w])
        probs = F.softmax(model(norm(img.unsqueeze(0).to(dev))).float(), -1)[0]
        p_top, i_top = probs.topk(min(topk, len(probs)))
        out.append({"image": str(p), "top": [(classes[i], float(pr)) for pr, i in zip(p_top.tolist(), i_top.tolist())]})
    return out
