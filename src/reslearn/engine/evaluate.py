"""Evaluate a saved model on a data set, and predict classes of image files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..checkpoint import load_model, tensors_from_json
from ..config import DataConfig, config_from_dict
from ..data.bundle import EVAL_BATCH_SIZE
from ..data.source import InMemorySource
from ..errors import ReslearnError
from ..tasks import ClassificationTask, topk_wrong
from .data import APP_DATA, IN_MEMORY, split_datasets
from .device import select_device

__all__ = ["evaluate_checkpoint", "ensemble_checkpoints", "collect_probs", "errors_from_probs", "predict_images",
           "image_inputs", "real_inputs", "eval_split", "eval_source", "eval_resize", "checkpoint_data_config"]


def _data_name(doc: dict[str, Any]) -> str:
    return (doc.get("config") or {}).get("data", {}).get("name") or doc.get("data", "cifar10")


def _normalizer(doc: dict[str, Any], device):
    from ..data.augment import Normalizer

    if doc.get("normalizer"):
        return Normalizer.from_state_dict(tensors_from_json(doc["normalizer"])).to(device)
    if _data_name(doc) == "imagefolder":  # checkpoints written before the trainer recorded it
        from ..data.transforms import imagenet_normalizer

        return imagenet_normalizer().to(device)
    raise ReslearnError("the checkpoint carries no input normaliser statistics")


def _image_classifier(doc: dict[str, Any], path: str | Path, command: str) -> None:
    """Refuse, in one line, a checkpoint that is not an image classifier (speech, steganalysis,
    age/gender): its inputs and outputs are not images and classes."""
    name = _data_name(doc)
    if name in APP_DATA:
        raise ReslearnError(f"{path} is a {name} model, not an image classifier; reslearn {command} takes image "
                            f"classifiers (its metrics are in the run's final.json; keyword spotting: reslearn analyze roc)")


def _load_classifier(path: str | Path, *, device: str, fast: bool, command: str):
    """``(model, doc, device)`` of an image-classifier checkpoint (on the fast path if ``fast``)."""
    dev = select_device(device, key="--device")
    model, doc = load_model(path, device=dev)
    _image_classifier(doc, path, command)
    return _fast(model, doc, fast), doc, dev


def _fast(model, doc: dict[str, Any], fast: bool):
    """The exact-fp32 fast path (BN folded, channels_last; :mod:`reslearn.inference`), or ``model``."""
    if not fast:
        return model
    from ..inference import fast_model

    return fast_model(model, input_size=(doc["in_chans"], *doc["image_size"]))


def checkpoint_data_config(doc: dict[str, Any], *, root: str | None, dataset: str | None) -> DataConfig:
    """The data config a checkpoint records (its run's ``data.*``), for evaluation: no training
    subset, no download, ``dataset`` / ``root`` instead of the recorded ones when given."""
    cfg = config_from_dict(doc["config"]).data if doc.get("config") else DataConfig(name=doc.get("data", "cifar10"))
    cfg = replace(cfg, name=dataset or cfg.name, train_subset=0, download=False)
    if root:
        cfg = replace(cfg, root=root)
    elif cfg.root and not Path(cfg.root).expanduser().exists():
        # a checkpoint from another machine (or reslearn's pretrained weights): the folder it was
        # trained from is not here, so look where data is looked for by default
        cfg = replace(cfg, root="")
    return cfg


def errors_from_probs(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    n = max(len(labels), 1)
    nll = float(F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum"))
    return {"loss": nll / n, "top1_err": 100 * topk_wrong(probs, labels, 1) / n,
            "top5_err": 100 * topk_wrong(probs, labels, 5) / n, "n": len(labels)}


def eval_split(doc: dict[str, Any], *, split: str = "test", root: str | None = None, dataset: str | None = None,
               limit: int = 0, shared_classes: bool = False, transform: Callable | None = None):
    """The images of ``split`` ("train", "val" or "test") of the data set a checkpoint records (or
    ``dataset`` / ``root``), as its training run split them (:func:`reslearn.engine.data.split_datasets`,
    which the trainer's own evaluation uses too), labelled as positions in the checkpoint's classes,
    matched by name (a missing or extra class: an error, or with ``shared_classes`` a warning);
    ``limit`` keeps the first ``limit`` (a fixed random ``limit`` of an image folder;
    :func:`subset_index`) instead of the run's ``data.train_subset`` / ``data.test_subset``.

    Returns ``(cfg, ds)``: an ``ArrayDataset`` (uint8) for in-memory sets, else a map-style
    dataset of ``(transform(image), label)`` over the folder's val/ (else test/) or train/ split.
    The one place eval, ensemble, analyze and export build a checkpoint's evaluation data."""
    cfg = checkpoint_data_config(doc, root=root, dataset=dataset)
    if cfg.name in APP_DATA:
        raise ReslearnError(f"{cfg.name} is not an image classification data set")
    if cfg.name not in IN_MEMORY and not cfg.root:
        raise ReslearnError("the checkpoint records no image folder; pass --data DIR")
    cfg = replace(cfg, train_subset=limit, test_subset=limit, shared_classes=shared_classes)
    classes = doc.get("classes") or None
    ds = split_datasets(cfg, (split,), classes=classes, transform=transform)[split]
    n_model = doc.get("model_kwargs", {}).get("num_classes", len(ds.classes))
    if classes is None and cfg.name not in IN_MEMORY and len(ds.classes) != n_model:
        raise ReslearnError(f"{cfg.root} has {len(ds.classes)} classes, the model {n_model}")
    return cfg, ds


def eval_source(doc: dict[str, Any], ds, *, batch_size: int = EVAL_BATCH_SIZE, device) -> InMemorySource:
    """Batches of an in-memory split (:func:`eval_split`) as the model in ``doc`` takes them:
    normalised with the checkpoint's statistics, on ``device``."""
    return InMemorySource(ds.images, ds.labels, batch_size=batch_size, normalize=_normalizer(doc, device),
                          device=device)


@torch.no_grad()
def collect_probs(path: str | Path, *, root: str | None = None, dataset: str | None = None,
                  split: str = "test", ten_crop: bool = False, multi_scale: bool = False,
                  scales: Sequence[int] | None = None, batch_size: int = EVAL_BATCH_SIZE, device: str = "cpu",
                  limit: int = 0, fast: bool = True, shared_classes: bool = False):
    """Softmax outputs of the model in ``path`` over ``split``: ``(probs, labels, doc, mode)``.
    ``fast`` runs the BN-folded channels_last model (same function, fp32); ``scales``: the
    multi-scale test's shorter sides (default: :func:`_views`); ``shared_classes`` as
    :func:`eval_split`."""
    if batch_size < 1:
        raise ReslearnError(f"batch size must be >= 1; got {batch_size}")
    if scales is not None and (not scales or min(scales) < 1):
        raise ReslearnError(f"multi-scale test sizes must be >= 1 pixel; got {list(scales)}")
    model, doc, dev = _load_classifier(path, device=device, fast=fast, command="eval")
    cfg = checkpoint_data_config(doc, root=root, dataset=dataset)
    if cfg.name not in IN_MEMORY:
        return _probs_folder(model, doc, cfg, split, ten_crop, multi_scale, scales, batch_size, dev, limit,
                             shared_classes)
    if ten_crop or multi_scale:
        raise ReslearnError("--ten-crop/--multi-scale are for ImageFolder (ImageNet-style) data")
    _, ds = eval_split(doc, split=split, root=root, dataset=dataset, limit=limit, shared_classes=shared_classes)
    if ds.images.shape[1] != doc["in_chans"]:
        raise ReslearnError(f"the model takes {doc['in_chans']} channels; {cfg.name} has {ds.images.shape[1]}")
    src = eval_source(doc, ds, batch_size=batch_size, device=dev)
    # a run trained with train.eval_flip reported flip-averaged errors: evaluate it the same way
    task = ClassificationTask(eval_flip=bool(doc.get("config", {}).get("train", {}).get("eval_flip")))
    probs, labels = [], []
    for x, y in src.iter_epoch(0):
        probs.append(task.log_probs(model, x).exp())
        labels.append(y)
    return torch.cat(probs), torch.cat(labels), doc, "flip" if task.eval_flip else "single"


def evaluate_checkpoint(path: str | Path, **kw: Any) -> dict[str, Any]:
    """Top-1/top-5 error of the model in ``path`` on a split of its data set (or another)."""
    probs, labels, doc, mode = collect_probs(path, **kw)
    views = {} if mode == "single" else _views(doc, mode, kw.get("scales"))
    data = checkpoint_data_config(doc, root=kw.get("root"), dataset=kw.get("dataset")).name
    return {"checkpoint": str(path), "model": doc["model"], "data": data,
            "split": kw.get("split", "test"), "mode": mode, **views, **errors_from_probs(probs, labels)}


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


def _views(doc: dict[str, Any], mode: str, scales: Sequence[int] | None) -> dict[str, Any]:
    """What the test of an ImageFolder model looks at, scaled to its training crop (the
    checkpoint's ``image_size``; He et al. 2016 Sec. 3.4 for 224): the crop and the shorter side
    it is cut from (8/7 of it, the paper's 256 for 224), or for ``mode`` multi-scale the shorter
    sides, the paper's {224, 256, 384, 480, 640} at the same ratios to the crop unless given."""
    from ..data.transforms import eval_resize, multi_scale_sizes

    crop = int(doc["image_size"][0])
    if mode == "multi-scale":
        return {"crop": crop, "scales": [int(s) for s in scales] if scales else list(multi_scale_sizes(crop))}
    return {"crop": crop, "resize": eval_resize(crop)}


def _probs_folder(model, doc, cfg, split, ten_crop, multi_scale, scales, batch_size, dev, limit, shared_classes):
    from ..data import testtime, transforms

    mode = "10-crop" if ten_crop else "multi-scale" if multi_scale else "center-crop"
    views = _views(doc, mode, scales)
    crop, resize = views["crop"], views.get("resize")
    if ten_crop:
        tf = transforms.ten_crop_transform(crop=crop, resize=resize)
    elif multi_scale:
        # the whole image, normalised; predict_multi_scale resizes it to each scale (and flips)
        from torchvision.transforms import v2

        tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                         transforms._normalize(transforms.IMAGENET_MEAN, None), v2.ToPureTensor()])
    else:
        tf = transforms.imagenet_eval_transform(crop=crop, resize=resize)
    _, ds = eval_split(doc, split=split, root=cfg.root, dataset=cfg.name, limit=limit,
                       shared_classes=shared_classes, transform=tf)
    bs = 1 if multi_scale else max(1, batch_size // (10 if ten_crop else 1))
    probs, labels = [], []
    for start in range(0, len(ds), bs):
        items = [ds[i] for i in range(start, min(start + bs, len(ds)))]
        labels.append(torch.tensor([int(t) for _, t in items], device=dev))
        if ten_crop:
            probs.append(testtime.predict_ten_crop(model, torch.stack([x for x, _ in items]).to(dev)))
        elif multi_scale:
            probs.append(testtime.predict_multi_scale(model, [items[0][0].to(dev)], scales=views["scales"]))
        else:
            probs.append(F.softmax(model(torch.stack([x for x, _ in items]).to(dev)).float(), -1))
    return torch.cat(probs), torch.cat(labels), doc, mode


def _read_image(path: str | Path, doc: dict[str, Any]) -> torch.Tensor:
    """uint8 (C, H, W), decoded as training decodes (:func:`reslearn.data.folder.read_image_file`),
    then the test-time view of the training data: image folders as ``eval`` (shorter side to
    256/224 of the crop, centre crop), in-memory sets shorter side to the training size, centre crop."""
    from torchvision.transforms.v2 import functional as TF

    from ..data.folder import read_image_file

    img = read_image_file(path, channels=1 if doc["in_chans"] == 1 else 3)
    return TF.center_crop(TF.resize(img, [eval_resize(doc)], antialias=True), list(doc["image_size"]))


def eval_resize(doc: dict[str, Any]) -> int:
    """The shorter side a checkpoint's test images are resized to before the centre crop: 256/224
    of the crop for the ImageFolder path (``imagenet_eval_transform``), else the training size."""
    from ..data.transforms import eval_resize as folder_resize

    side = min(doc["image_size"])
    return folder_resize(side) if _data_name(doc) == "imagefolder" else side


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
    model, doc, dev = _load_classifier(path, device=device, fast=fast, command="predict")
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
    from ..data import transforms

    crop = doc["image_size"][0]
    tf = transforms.imagenet_eval_transform(crop=crop, resize=transforms.eval_resize(crop))
    cfg, ds = eval_split(doc, split=split, root=root, limit=n, transform=tf)
    if cfg.name in IN_MEMORY:
        return _normalizer(doc, torch.device("cpu"))(ds.images), ds.labels, f"{cfg.name} {split}"
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), torch.tensor([int(t) for _, t in items]), f"{cfg.root} {split}"
