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
from .data import APP_DATA, IN_MEMORY, _load_arrays, subset_index
from .device import select_device
from .task import ClassificationTask, topk_wrong

__all__ = ["evaluate_checkpoint", "ensemble_checkpoints", "collect_probs", "errors_from_probs", "predict_images",
           "image_inputs", "real_inputs"]


def _normalizer(doc: dict[str, Any], device):
    from ..data.augment import Normalizer

    if not doc.get("normalizer"):
        raise ReslearnError("the checkpoint carries no input normaliser statistics")
    return Normalizer.from_state_dict(tensors_from_json(doc["normalizer"])).to(device)


def _fast(model, doc: dict[str, Any], fast: bool):
    """The exact-fp32 fast path (BN folded, channels_last; :mod:`reslearn.inference`), or ``model``."""
    if not fast:
        return model
    from ..inference import fast_model

    return fast_model(model, input_size=(doc["in_chans"], *doc["image_size"]))


def _data_cfg(doc: dict[str, Any], *, root: str | None, dataset: str | None) -> DataConfig:
    cfg = config_from_dict(doc["config"]).data if doc.get("config") else DataConfig(name=doc.get("data", "cifar10"))
    cfg = replace(cfg, name=dataset or cfg.name, train_subset=0, download=False)
    if root:
        cfg = replace(cfg, root=root)
    return cfg


def errors_from_probs(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    n = max(len(labels), 1)
    nll = float(F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum"))
    return {"loss": nll / n, "top1_err": 100 * topk_wrong(probs, labels, 1) / n,
            "top5_err": 100 * topk_wrong(probs, labels, 5) / n, "n": len(labels)}


@torch.no_grad()
def collect_probs(path: str | Path, *, root: str | None = None, dataset: str | None = None,
                  split: str = "test", ten_crop: bool = False, multi_scale: bool = False,
                  batch_size: int = 256, device: str = "cpu", limit: int = 0, fast: bool = True):
    """Softmax outputs of the model in ``path`` over ``split``: ``(probs, labels, doc, mode)``.
    ``fast`` runs the BN-folded channels_last model (same function, fp32)."""
    if batch_size < 1:
        raise ReslearnError(f"batch size must be >= 1; got {batch_size}")
    dev = select_device(device, key="--device")
    model, doc = load_model(path, device=dev)
    model = _fast(model, doc, fast)
    cfg = _data_cfg(doc, root=root, dataset=dataset)
    if cfg.name in APP_DATA:  # their own tasks and metrics: final.json, or e.g. `analyze roc`
        raise ReslearnError(f"reslearn eval takes image classifiers; {path} was trained on {cfg.name} "
                            f"(its metrics are in the run's final.json; keyword spotting: reslearn analyze roc)")
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
        index = subset_index(len(ds), limit, cfg)
        if index is not None:
            ds = ds.subset(index)
        if ds.images.shape[1] != doc["in_chans"]:
            raise ReslearnError(f"the model takes {doc['in_chans']} channels; {cfg.name} has {ds.images.shape[1]}")
        src = InMemorySource(ds.images, ds.labels, batch_size=batch_size, normalize=_normalizer(doc, dev), device=dev)
        # a run trained with train.eval_flip reported flip-averaged errors: evaluate it the same way
        task = ClassificationTask(eval_flip=bool(doc.get("config", {}).get("train", {}).get("eval_flip")))
        probs, labels = [], []
        for x, y in src.iter_epoch(0):
            probs.append(task.log_probs(model, x).exp())
            labels.append(y)
        return torch.cat(probs), torch.cat(labels), doc, "flip" if task.eval_flip else "single"
    return _probs_folder(model, doc, cfg, split, ten_crop, multi_scale, batch_size, dev, limit)


def evaluate_checkpoint(path: str | Path, **kw: Any) -> dict[str, Any]:
    """Top-1/top-5 error of the model in ``path`` on a split of its data set (or another)."""
    probs, labels, doc, mode = collect_probs(path, **kw)
    return {"checkpoint": str(path), "model": doc["model"], "data": _data_cfg(doc, root=kw.get("root"), dataset=kw.get("dataset")).name,
            "split": kw.get("split", "test"), "mode": mode, **errors_from_probs(probs, labels)}


def ensemble_checkpoints(paths: Sequence[str | Path], **kw: Any) -> dict[str, Any]:
    """Average the softmax outputs of several models (He et al. 2016 Table 5: an ensemble of six
    models gave 3.57% top-5 error); report each member and the ensemble."""
    if len(paths) < 2:
        raise ReslearnError("an ensemble needs at least two checkpoints")
    members, total, ref = [], None, None
    for p in paths:
        probs, labels, doc, mode = collect_probs(p, **kw)
        if ref is not None and not torch.equal(labels, ref):
            raise ReslearnError(f"{p} was evaluated on different data than {paths[0]} (the members must share a data set)")
        ref = labels
        total = probs if total is None else total + probs
        members.append({"checkpoint": str(p), "model": doc["model"], **errors_from_probs(probs, labels)})
    return {"members": members, "ensemble": errors_from_probs(total / len(paths), ref), "mode": mode}


def _probs_folder(model, doc, cfg, split, ten_crop, multi_scale, batch_size, dev, limit):
    from ..data import testtime, transforms
    from ..data.folder import ImageFolderDataset

    crop = doc["image_size"][0]
    resize = round(crop * 256 / 224)
    if ten_crop:
        tf, mode = transforms.ten_crop_transform(crop=crop, resize=resize), "10-crop"
    elif multi_scale:
        # the whole image, normalised; predict_multi_scale resizes it to each scale (and flips)
        from torchvision.transforms import v2

        tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                         transforms._normalize(transforms.IMAGENET_MEAN, None), v2.ToPureTensor()])
        mode = "multi-scale"
    else:
        tf, mode = transforms.imagenet_eval_transform(crop=crop, resize=resize), "center-crop"
    ds = ImageFolderDataset(cfg.root, split=split, transform=tf, on_error=cfg.on_bad_file)
    index = subset_index(len(ds), limit, cfg)
    idx = range(len(ds)) if index is None else index.tolist()
    bs = 1 if multi_scale else max(1, batch_size // (10 if ten_crop else 1))
    probs, labels = [], []
    for start in range(0, len(idx), bs):
        items = [ds[i] for i in idx[start : start + bs]]
        labels.append(torch.tensor([int(t) for _, t in items], device=dev))
        if ten_crop:
            probs.append(testtime.predict_ten_crop(model, torch.stack([x for x, _ in items]).to(dev)))
        elif multi_scale:
            probs.append(testtime.predict_multi_scale(model, [items[0][0].to(dev)]))
        else:
            probs.append(F.softmax(model(torch.stack([x for x, _ in items]).to(dev)).float(), -1))
    return torch.cat(probs), torch.cat(labels), doc, mode


def _read_image(path: str | Path, doc: dict[str, Any]) -> torch.Tensor:
    """uint8 (C, H, W): decoded, shorter side to the training size, centre crop (the test-time
    view of the training data)."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    p = Path(path)
    if not p.is_file():
        raise ReslearnError(f"image {p} not found")
    try:
        img = decode_image(str(p), mode=ImageReadMode.GRAY if doc["in_chans"] == 1 else ImageReadMode.RGB)
    except Exception as e:
        raise ReslearnError(f"cannot decode image {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    h, w = doc["image_size"]
    return TF.center_crop(TF.resize(img, [min(h, w)], antialias=True), [h, w])


def image_inputs(doc: dict[str, Any], images: Sequence[str | Path], *, device: str = "cpu") -> torch.Tensor:
    """Image files as the model's float32 input batch, preprocessed as :func:`predict_images` does."""
    norm = _normalizer(doc, torch.device(device))
    return norm(torch.stack([_read_image(p, doc) for p in images]).to(device))


@torch.no_grad()
def predict_images(path: str | Path, images: Sequence[str | Path], *, topk: int = 5,
                   device: str = "cpu", fast: bool = True) -> list[dict[str, Any]]:
    """Top-``topk`` classes with probabilities for each image file (``fast``: as :func:`collect_probs`)."""
    if topk < 1:
        raise ReslearnError(f"topk must be >= 1 (the number of classes to list); got {topk}")
    dev = select_device(device, key="--device")
    model, doc = load_model(path, device=dev)
    model = _fast(model, doc, fast)
    classes = doc.get("classes") or [str(i) for i in range(model.num_classes)]
    out = []
    for img_path in images:
        probs = F.softmax(model(image_inputs(doc, [img_path], device=str(dev))).float(), -1)[0]
        p_top, i_top = probs.topk(min(topk, len(probs)))
        out.append({"image": str(Path(img_path)),
                    "top": [(classes[i], float(pr)) for pr, i in zip(p_top.tolist(), i_top.tolist())]})
    return out


def real_inputs(doc: dict[str, Any], *, split: str, n: int, root: str | None = None):
    """``n`` images of ``split`` ("train" or "test") of the checkpoint's own data set, as the
    model's float32 input: ``(inputs, labels, description)``. In-memory sets (CIFAR, MNIST-like)
    take their first ``n``, image folders a fixed random ``n``, as ``eval --limit`` does."""
    cfg = _data_cfg(doc, root=root, dataset=None)
    if cfg.name in APP_DATA:
        raise ReslearnError(f"{cfg.name} is not an image data set")
    if cfg.name in IN_MEMORY:
        train, test = _load_arrays(cfg)
        ds = train if split == "train" else test
        index = subset_index(len(ds), n, cfg)
        ds = ds if index is None else ds.subset(index)
        return _normalizer(doc, torch.device("cpu"))(ds.images), ds.labels, f"{cfg.name} {split}"
    from ..data import transforms
    from ..data.folder import ImageFolderDataset

    crop = doc["image_size"][0]
    tf = transforms.imagenet_eval_transform(crop=crop, resize=round(crop * 256 / 224))
    ds = ImageFolderDataset(cfg.root, split="train" if split == "train" else "val", transform=tf,
                            on_error=cfg.on_bad_file)
    index = subset_index(len(ds), n, cfg)
    items = [ds[i] for i in (range(len(ds)) if index is None else index.tolist())]
    return torch.stack([x for x, _ in items]), torch.tensor([int(t) for _, t in items]), f"{cfg.root} {split}"
