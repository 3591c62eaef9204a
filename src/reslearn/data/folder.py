"""Image folders, ``root/<split>/<class>/<image>`` (torchvision's ImageFolder layout, ImageNet's
``train``/``val``), checked before training so a bad file is reported by name at once instead of
crashing an epoch hours later.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ReslearnError
from .arrays import ArrayDataset

__all__ = ["IMG_EXTENSIONS", "scan_image_folder", "ImageFolderDataset", "load_image_folder_arrays", "decode_rgb",
           "decode_image", "read_image_file", "decode_images", "match_classes"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")
# The evaluation split is val/ where there is one (ImageNet, Tiny-ImageNet), else test/ (CIFAR as
# JPEGs): "val" and "test" both name it, so training and `reslearn eval` read the same folder.
_SPLIT_ALIASES = {"val": ("val", "test"), "test": ("val", "test")}
# Tiny-ImageNet's own val layout: val/images/*.JPEG with labels in val_annotations.txt
# (file<TAB>wnid<TAB>box); its test/ has images/ alone (no labels).
_ANNOTATIONS, _FLAT = "val_annotations.txt", "images"
_SHARED_HINT = "pass --shared-classes (eval, ensemble) or data.shared_classes=true (train) to use the shared classes only"
# File signatures of the two formats nearly every image set uses, and how each file must end
# (JPEG: the EOI marker, ITU-T T.81 B.1.1.3; PNG: the IEND chunk, PNG spec 11.2.5). A truncated
# download fails the end check; a text or HTML file saved as .jpg fails the signature.
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_SIG, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
_TAIL = 4096  # bytes searched for the end marker: tolerates trailing padding some writers add
_SHOW = 5  # names listed in the skip warning


def _check_on_error(on_error: str) -> None:
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise'; got {on_error!r}")


def _split_dir(root: Path, split: str) -> Path:
    for name in _SPLIT_ALIASES.get(split, (split,)):
        if (root / name).is_dir():
            return root / name
    raise ReslearnError(f"no folder {root / split} (expected the layout root/<split>/<class>/<image>)")


def _problem(path: Path, extensions: tuple[str, ...] | None) -> str | None:
    """Why ``path`` is not a usable image, or None.

    JPEG and PNG are checked by their signature and end marker (two small reads), everything else
    by ``PIL.Image.open(...).verify()``. PIL's open alone costs ~0.2 ms of GIL-bound Python per
    file (minutes for ImageNet's 1.28M files, on every start) and its JPEG ``verify`` does not
    notice truncation, the usual corruption, which the end marker does.
    """
    if extensions is not None and not path.name.lower().endswith(extensions):
        return "not an image file extension"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if head.startswith((_JPEG_SOI, _PNG_SIG)):
                f.seek(max(2, path.stat().st_size - _TAIL))  # past the SOI marker, whose FF D8 FF could fake FF D9
                tail = f.read()
                if head.startswith(_JPEG_SOI):
                    return None if _JPEG_EOI in tail else "truncated JPEG (no end-of-image marker)"
                return None if _PNG_IEND in tail else "truncated PNG (no IEND chunk)"
        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, SyntaxError, OSError, ...)
        return f"{type(e).__name__}: {e}"
    return None


def match_classes(found: Sequence[str], classes: Sequence[str], *, where: str | Path,
                  shared: bool = False) -> list[str]:
    """The classes of ``found`` (a split's class names) that are among ``classes`` (the training
    set's, whose positions are the labels), in ``classes`` order.

    A class missing from ``found`` or an extra one is a ``ReslearnError`` naming it: positions
    would no longer mean the same classes. With ``shared=True`` the classes both have are used,
    with a warning saying how many."""
    known, have = set(classes), set(found)
    missing, extra = [c for c in classes if c not in have], sorted(have - known)
    if not missing and not extra:
        return list(classes)
    what = "; ".join(part for part in (
        f"lacks {len(missing)} of the {len(classes)} training classes (first: {missing[0]})" if missing else "",
        f"has {len(extra)} class(es) the training set has not (first: {extra[0]})" if extra else "") if part)
    if not shared:
        raise ReslearnError(f"{where} {what}; {_SHARED_HINT}")
    kept = [c for c in classes if c in have]
    if not kept:
        raise ReslearnError(f"{where} shares no class with the {len(classes)} training classes")
    warnings.warn(f"{where}: using only the {len(kept)} of the {len(classes)} training classes it has (it {what})",
                  stacklevel=3)
    return kept


def _walk(top: Path, seen_dirs: set[str], seen_files: dict[str, Path], dups: list[tuple[Path, Path]]) -> list[Path]:
    """Non-hidden files below ``top``, sorted, depth first (``os.walk``'s order). Links are
    followed, but each real folder is read once (a link loop such as ``loop -> .`` ends there) and
    each real file once; a file reached again through a link goes to ``dups``."""
    out, stack = [], [(top, os.path.realpath(top))]
    while stack:
        d, real = stack.pop()
        if real in seen_dirs:
            continue
        seen_dirs.add(real)
        with os.scandir(d) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        subdirs = []
        for e in entries:
            # Only a link can make a path differ from its real path: realpath for links alone.
            key = os.path.realpath(e.path) if e.is_symlink() else os.path.join(real, e.name)
            if e.is_dir():
                subdirs.append((Path(e.path), key))
            elif e.is_file():
                if key in seen_files:
                    dups.append((Path(e.path), seen_files[key]))
                    continue
                seen_files[key] = Path(e.path)
                out.append(Path(e.path))
        stack.extend(reversed(subdirs))
    return out


def _annotated(split_dir: Path) -> list[tuple[Path, str]] | None:
    """Tiny-ImageNet's ``val/images`` + ``val_annotations.txt``: (path, class name) pairs, or None."""
    ann = split_dir / _ANNOTATIONS
    if not ann.is_file():
        return None
    rows = [ln.split("\t") for ln in ann.read_text().splitlines() if ln.strip()]
    bad = next((i for i, r in enumerate(rows, 1) if len(r) < 2), None)
    if bad is not None:
        raise ReslearnError(f"{ann}:{bad}: expected <file><TAB><class>")
    return [(split_dir / _FLAT / r[0].strip(), r[1].strip()) for r in rows]


def _list(split_dir: Path, classes: Sequence[str] | None,
          shared: bool = False) -> tuple[list[tuple[Path, int]], list[str]]:
    """All non-hidden files below each class folder, sorted, with their class index (the
    position in ``classes``, the training set's, matched by name; see :func:`match_classes`)."""
    pairs = _annotated(split_dir)
    if pairs is not None:
        found = sorted({c for _, c in pairs})
    else:
        found = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
        if found == [_FLAT]:
            raise ReslearnError(f"{split_dir} holds {_FLAT}/ without labels (no class folders, no {_ANNOTATIONS}): "
                                f"an unlabelled split cannot be evaluated; use a labelled val/ or test/")
    if not found:
        raise ReslearnError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    classes = found if classes is None else list(classes)
    label = {c: i for i, c in enumerate(classes)}
    use = match_classes(found, classes, where=split_dir, shared=shared)
    if pairs is not None:
        return [(p, label[c]) for p, c in sorted(pairs) if c in label], classes
    files, dups, seen_dirs, seen_files = [], [], set(), {}
    for cls in use:
        found_files = _walk(split_dir / cls, seen_dirs, seen_files, dups)
        if not found_files:
            raise ReslearnError(f"{split_dir / cls}: empty class folder (no files); remove it or add its images")
        files += [(p, label[cls]) for p in found_files]
    if dups:
        first = ", ".join(f"{p} (= {q})" for p, q in dups[:2])
        warnings.warn(f"{len(dups)} duplicate file(s) under {split_dir} (one file reached through links) "
                      f"read once: {first}", stacklevel=3)
    return files, classes


def _report(bad: list[tuple[Path, str]], *, where: Path, on_error: str) -> None:
    if not bad:
        return
    if on_error == "raise":
        path, why = bad[0]
        raise ReslearnError(f"{path}: unreadable image ({why}); fix or remove it, or use on_error='skip'")
    names = ", ".join(str(p) for p, _ in bad[:_SHOW]) + (", ..." if len(bad) > _SHOW else "")
    warnings.warn(f"skipped {len(bad)} unreadable or non-image file(s) under {where}: {names}", stacklevel=3)


def _scan(split_dir: Path, *, classes: Sequence[str] | None, extensions: tuple[str, ...] | None,
          workers: int, shared: bool = False, listed: tuple[list[tuple[Path, int]], list[str]] | None = None,
          ) -> tuple[list[tuple[Path, int]], list[str], list[tuple[Path, str]]]:
    """The usable samples, the classes and the bad files with the reason for each (of ``listed``,
    :func:`_list`'s result, when the caller has it)."""
    files, classes = listed or _list(split_dir, classes, shared)
    # Threads help where the file system is slow (network storage); chunks keep the executor's
    # per-task overhead small against the ~10 us check.
    chunks = [files[i : i + 1024] for i in range(0, len(files), 1024)]
    with ThreadPoolExecutor(max(1, workers)) as ex:
        problems = [why for part in ex.map(lambda c: [_problem(p, extensions) for p, _ in c], chunks) for why in part]
    samples = [f for f, why in zip(files, problems) if why is None]
    if not samples:
        raise ReslearnError(f"{split_dir}: no readable images ({len(files)} files)")
    empty = sorted({lab for _, lab in files} - {lab for _, lab in samples})
    if empty:  # it would be a class the model never sees
        raise ReslearnError(f"{split_dir / classes[empty[0]]}: no readable image in this class folder "
                            f"({len(empty)} such folder(s)); add images or remove it")
    return samples, classes, [(f[0], why) for f, why in zip(files, problems) if why is not None]


def scan_image_folder(
    root: str | Path,
    *,
    split: str,
    extensions: tuple[str, ...] | None = IMG_EXTENSIONS,
    on_error: str = "skip",
    classes: Sequence[str] | None = None,
    workers: int = 4,
    shared_classes: bool = False,
) -> tuple[list[tuple[Path, int]], list[str], list[Path]]:
    """List and check the images of ``root/<split>/<class>/*``.

    ``split="val"`` also finds a ``test`` folder and vice versa. Every file is checked cheaply
    (header, JPEG end marker; :func:`_problem`), in ``workers`` threads; files with another
    extension (``extensions=None`` admits any) and unreadable files are bad: ``on_error="skip"``
    leaves them out with one warning naming the first few, ``"raise"`` raises naming the first.
    Hidden files are ignored; links are followed, each real folder and file read once (duplicates
    reached through links are warned about); an empty class folder is an error. Pass the training
    set's ``classes`` when scanning another split: labels are matched by class name, and a missing
    or extra class folder is an error, or with ``shared_classes`` a warning (the shared classes are
    used; :func:`match_classes`). Tiny-ImageNet's ``val/images`` + ``val_annotations.txt`` is read.

    Returns:
        ``(samples, classes, skipped)``: sorted ``(path, label)`` pairs, class names (sorted
        folder names unless given), and the skipped paths.
    """
    _check_on_error(on_error)
    split_dir = _split_dir(Path(root), split)
    samples, classes, bad = _scan(split_dir, classes=classes, extensions=extensions, workers=workers,
                                  shared=shared_classes)
    _report(bad, where=split_dir, on_error=on_error)
    return samples, classes, [p for p, _ in bad]


def _open(path: Path):
    """``Image.open`` with a pixel limit: a file whose header claims more than
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's decompression-bomb guard, 89.5M by default,
    read at each call so a user raises it as for Pillow; a 30000x30000 PNG of 870 KB would take
    3.3 GB) is refused before decoding. Pillow itself only warns below twice that (the CLI
    silences that warning, which this error replaces; ``warnings.catch_warnings`` is not
    thread-safe, and decoding runs in threads)."""
    limit = Image.MAX_IMAGE_PIXELS
    why = f"over the limit of {limit or 0:,} (PIL.Image.MAX_IMAGE_PIXELS; a decompression bomb?)"
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        n = re.search(r"\((\d+) pixels\)", str(e))
        raise ReslearnError(f"{path}: {int(n.group(1)) if n else 0:,} pixels, {why}") from None
    w, h = im.size
    if limit and w * h > limit:
        im.close()
        raise ReslearnError(f"{path}: {w * h:,} pixels ({w}x{h}), {why}")
    return im


def _to_8bit(im: Image.Image, path: Path) -> Image.Image:
    """8-bit images as they are; 16-bit integer images (``I;16*``, and ``I`` within 0..65535, as
    Pillow opens 16-bit PNG and TIFF) scaled by 255/65535; float images (``F``) in [0, 1] scaled by
    255. Pillow's ``convert`` would clip these to 255 (a nearly white image). Others are refused."""
    if not im.mode.startswith(("I", "F")):
        return im
    a = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ReslearnError(f"{path}: a float image with values outside [0, 1] "
                                f"({np.nanmin(a):g}..{np.nanmax(a):g}); save it as 8- or 16-bit")
        a = a * 255
    else:
        if a.min() < 0 or a.max() > 65535:
            raise ReslearnError(f"{path}: a 32-bit integer image ({a.min():g}..{a.max():g}); save it as 8- or 16-bit")
        a = a * (255 / 65535)
    return Image.fromarray(np.rint(a).astype(np.uint8), "L")


def decode_image(path: str | Path, *, channels: int = 3) -> torch.Tensor:
    """Decode an image file to uint8 (C, H, W), RGB (``channels=3``) or grayscale (1), with PIL
    (libjpeg-turbo for JPEG; decoding releases the GIL, so threads decode in parallel): the one
    decoder of training, eval and predict. 16-bit and float images are scaled to 8 bits
    (:func:`_to_8bit`); more pixels than Pillow's limit is a ``ReslearnError``. Not
    ``torchvision.io.decode_image``: torchvision 0.29 deprecated its image decoders in favour of
    TorchCodec, and it has no pixel limit."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    path = Path(path)
    with _open(path) as im:
        arr = np.array(_to_8bit(im, path).convert("RGB" if channels == 3 else "L"))  # a writable copy
    return torch.from_numpy(arr.reshape(*arr.shape[:2], channels)).permute(2, 0, 1).contiguous()


def decode_rgb(path: str | Path) -> torch.Tensor:
    """:func:`decode_image` to uint8 RGB (3, H, W)."""
    return decode_image(path, channels=3)


def read_image_file(path: str | Path, *, channels: int = 3) -> torch.Tensor:
    """One image file a user names (``reslearn predict``): checked as the training scan checks
    (extension among ``IMG_EXTENSIONS``, header, truncation) and decoded by :func:`decode_image`;
    any problem is one ``ReslearnError`` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ReslearnError(f"image {p} not found")
    why = _problem(p, IMG_EXTENSIONS)
    if why == "not an image file extension":
        why = f"not an image file extension (reslearn reads {', '.join(IMG_EXTENSIONS)})"
    if why is not None:
        raise ReslearnError(f"cannot decode image {p}: {why}")
    try:
        return decode_image(p, channels=channels)
    except ReslearnError:
        raise
    except Exception as e:  # PIL raises many types
        raise ReslearnError(f"cannot decode image {p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


class ImageFolderDataset(torch.utils.data.Dataset):
    """A checked image folder (see :func:`scan_image_folder`) for a ``DataLoader``.

    Items are ``(image, label)``: ``image`` uint8 RGB (3, H, W) passed through ``transform``
    (e.g. :func:`reslearn.data.transforms.imagenet_train_transform`). A file that passed the scan
    but still fails to decode (changed since, or corrupt past its header) raises
    ``ReslearnError`` naming it under ``on_error="raise"``; under ``"skip"`` it is warned about
    by name and the next sample is returned instead, so an epoch never dies on one file.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_error: str = "skip",
        classes: Sequence[str] | None = None,
        extensions: tuple[str, ...] | None = IMG_EXTENSIONS,
        shared_classes: bool = False,
    ) -> None:
        self.samples, self.classes, self.skipped = scan_image_folder(
            root, split=split, extensions=extensions, on_error=on_error, classes=classes,
            shared_classes=shared_classes,
        )
        self.transform, self.on_error = transform, on_error

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for k in range(len(self.samples)):
            path, label = self.samples[(index + k) % len(self.samples)]
            try:
                img = decode_rgb(path)
            except Exception as e:
                if self.on_error == "raise":
                    raise ReslearnError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
                warnings.warn(f"{path}: cannot decode image ({type(e).__name__}); using the next sample", stacklevel=2)
                continue
            return (self.transform(img) if self.transform is not None else img), label
        raise ReslearnError(f"no image in {len(self.samples)} files could be decoded")


def _cache_key(files: Iterable[tuple[Path, int]], *, classes: Sequence[str], size: int | None,
               extensions: tuple[str, ...] | None) -> str:
    h = hashlib.sha256(json.dumps({"v": 1, "classes": list(classes), "size": size, "ext": extensions}).encode())
    for path, label in files:
        st = path.stat()
        h.update(f"{path}\0{label}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()[:24]


def _decode_all(samples: list[tuple[Path, int]], *, size: int | None, workers: int, progress: bool,
                desc: str) -> tuple[torch.Tensor, list[tuple[Path, str]]]:
    """Decode ``samples`` into one preallocated (N, 3, S, S) tensor in ``workers`` threads
    (PIL's decoders and torch's resize release the GIL). Returns the images (failed rows
    dropped) and the failures."""
    from tqdm.auto import tqdm

    def load(path: Path) -> torch.Tensor:
        img = decode_rgb(path)
        if size is None:
            return img
        # What torchvision's v2 resize does for uint8 tensors (antialiased bilinear, uint8 kernel).
        return F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True)[0]

    shape = None if size is None else torch.Size((3, size, size))
    for path, _ in samples:  # without size, the first decodable image fixes the shape
        if shape is not None:
            break
        try:
            shape = load(path).shape
        except Exception:
            continue
    if shape is None:
        raise ReslearnError(f"none of the {len(samples)} images could be decoded (first: {samples[0][0]})")
    out = torch.empty((len(samples), *shape), dtype=torch.uint8)
    failed: list[tuple[int, str]] = []

    def work(chunk: range) -> int:
        for i in chunk:
            path = samples[i][0]
            try:
                img = load(path)
            except Exception as e:
                failed.append((i, f"{type(e).__name__}: {e}"))
                continue
            if img.shape != shape:
                failed.append((i, f"size {tuple(img.shape[1:])} differs from {tuple(shape[1:])}; pass size="))
                continue
            out[i] = img
        return len(chunk)

    step = 256
    chunks = [range(s, min(s + step, len(samples))) for s in range(0, len(samples), step)]
    with ThreadPoolExecutor(max(1, workers)) as ex, tqdm(total=len(samples), desc=desc, unit="img", disable=None if progress else True) as bar:  # None: off when not a terminal
        for n in ex.map(work, chunks):
            bar.update(n)
    failed.sort()
    if failed:
        keep = torch.ones(len(samples), dtype=torch.bool)
        keep[[i for i, _ in failed]] = False
        out = out[keep]
    return out, [(samples[i][0], why) for i, why in failed]


def decode_images(samples: list[tuple[Path, int]], *, size: int | None, workers: int = 2,
                  progress: bool = False, desc: str = "decode") -> tuple[torch.Tensor, list[tuple[Path, str]]]:
    """Decode ``(path, label)`` samples into one uint8 (N, 3, S, S) tensor with ``workers`` threads,
    resized to ``size`` (antialiased bilinear) if given. Returns the images of the decodable files
    (in order) and ``(path, reason)`` for the others. The public face of the loader used by
    :func:`load_image_folder_arrays` (e.g. for UTKFace, whose labels live in the file names)."""
    return _decode_all(samples, size=size, workers=workers, progress=progress, desc=desc)


def load_image_folder_arrays(
    root: str | Path,
    *,
    split: str,
    size: int | None = None,
    on_error: str = "skip",
    workers: int = 2,
    cache_dir: str | Path | None = None,
    classes: Sequence[str] | None = None,
    extensions: tuple[str, ...] | None = IMG_EXTENSIONS,
    progress: bool = True,
    shared_classes: bool = False,
) -> ArrayDataset:
    """Decode a small image folder (e.g. CIFAR-10 as JPEGs) into one uint8 (N, 3, H, W) tensor,
    for ``InMemorySource``.

    Images keep their size (all must agree) unless ``size`` resizes each to ``size x size``
    (antialiased). Files are checked and bad ones skipped or raised as in
    :func:`scan_image_folder`, images that fail to decode likewise. With ``cache_dir``, the result
    is stored as a ``.safetensors`` file keyed by the file list, mtimes and sizes, the classes
    and ``size``, so a second load of unchanged files reads one file instead of decoding.

    Returns:
        ``ArrayDataset`` named after the folder ``root``.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    _check_on_error(on_error)
    if size is not None and size <= 0:
        raise ValueError(f"size must be positive or None; got {size}")
    root = Path(root)
    split_dir = _split_dir(root, split)
    name = root.resolve().name
    cache, listed = None, None
    if cache_dir is not None:
        listed = files, cls = _list(split_dir, classes, shared_classes)
        key = _cache_key(files, classes=cls, size=size, extensions=extensions)
        cache = Path(cache_dir) / f"{name}-{split}-{key}.safetensors"
        if cache.is_file():
            with safe_open(str(cache), framework="pt") as f:
                meta = f.metadata()
                images, labels = f.get_tensor("images"), f.get_tensor("labels")
            _report([(Path(p), why) for p, why in json.loads(meta["skipped"])], where=split_dir, on_error=on_error)
            return ArrayDataset(images=images, labels=labels, classes=json.loads(meta["classes"]), name=name)
    samples, cls, bad = _scan(split_dir, classes=classes, extensions=extensions, workers=workers,
                              shared=shared_classes, listed=listed)
    if on_error == "raise":
        _report(bad, where=split_dir, on_error=on_error)  # fail before spending time decoding
    images, failed = _decode_all(samples, size=size, workers=workers, progress=progress, desc=f"{name}/{split}")
    _report(bad + failed, where=split_dir, on_error=on_error)
    failed_paths = {p for p, _ in failed}
    labels = torch.tensor([lab for p, lab in samples if p not in failed_paths], dtype=torch.int64)
    ds = ArrayDataset(images=images, labels=labels, classes=cls, name=name)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        skipped = [(str(p), why) for p, why in bad + failed]
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        save_file({"images": images.contiguous(), "labels": labels}, str(tmp),
                  metadata={"classes": json.dumps(cls), "skipped": json.dumps(skipped)})
        os.replace(tmp, cache)  # atomic: a reader never sees half a cache file
    return ds
