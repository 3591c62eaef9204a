"""Image folders, ``root/<split>/<class>/<image>`` (torchvision's ImageFolder layout, ImageNet's
``train``/``val``), checked before training so a bad file is reported by name at once instead of
crashing an epoch hours later.
"""

from __future__ import annotations

import hashlib
import json
import os
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
           "decode_images"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")
_SPLIT_ALIASES = {"val": ("val", "test"), "test": ("test", "val")}  # ImageNet says val, CIFAR test
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


def _list(split_dir: Path, classes: Sequence[str] | None) -> tuple[list[tuple[Path, int]], list[str]]:
    """All non-hidden files below each class folder, sorted, with their class index."""
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ReslearnError(f"{split_dir / unknown[0]}: class folder not among the {len(classes)} given classes")
    if not classes:
        raise ReslearnError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    files = []
    for label, cls in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(split_dir / cls, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [(Path(dirpath) / f, label) for f in sorted(filenames) if not f.startswith(".")]
    return files, list(classes)


def _report(bad: list[tuple[Path, str]], *, where: Path, on_error: str) -> None:
    if not bad:
        return
    if on_error == "raise":
        path, why = bad[0]
        raise ReslearnError(f"{path}: unreadable image ({why}); fix or remove it, or use on_error='skip'")
    names = ", ".join(str(p) for p, _ in bad[:_SHOW]) + (", ..." if len(bad) > _SHOW else "")
    warnings.warn(f"skipped {len(bad)} unreadable or non-image file(s) under {where}: {names}", stacklevel=3)


def _scan(split_dir: Path, *, classes: Sequence[str] | None, extensions: tuple[str, ...] | None,
          workers: int) -> tuple[list[tuple[Path, int]], list[str], list[tuple[Path, str]]]:
    """The usable samples, the classes and the bad files with the reason for each."""
    files, classes = _list(split_dir, classes)
    # Threads help where the file system is slow (network storage); chunks keep the executor's
    # per-task overhead small against the ~10 us check.
    chunks = [files[i : i + 1024] for i in range(0, len(files), 1024)]
    with ThreadPoolExecutor(max(1, workers)) as ex:
        problems = [why for part in ex.map(lambda c: [_problem(p, extensions) for p, _ in c], chunks) for why in part]
    samples = [f for f, why in zip(files, problems) if why is None]
    if not samples:
        raise ReslearnError(f"{split_dir}: no readable images ({len(files)} files)")
    return samples, classes, [(f[0], why) for f, why in zip(files, problems) if why is not None]


def scan_image_folder(
    root: str | Path,
    *,
    split: str,
    extensions: tuple[str, ...] | None = IMG_EXTENSIONS,
    on_error: str = "skip",
    classes: Sequence[str] | None = None,
    workers: int = 4,
) -> tuple[list[tuple[Path, int]], list[str], list[Path]]:
    """List and check the images of ``root/<split>/<class>/*``.

    ``split="val"`` also finds a ``test`` folder and vice versa. Every file is checked cheaply
    (header, JPEG end marker; :func:`_problem`), in ``workers`` threads; files with another
    extension (``extensions=None`` admits any) and unreadable files are bad: ``on_error="skip"``
    leaves them out with one warning naming the first few, ``"raise"`` raises naming the first.
    Hidden files are ignored. Pass the training set's ``classes`` when scanning a validation set
    so labels agree even if a class folder is missing there.

    Returns:
        ``(samples, classes, skipped)``: sorted ``(path, label)`` pairs, class names (sorted
        folder names unless given), and the skipped paths.
    """
    _check_on_error(on_error)
    split_dir = _split_dir(Path(root), split)
    samples, classes, bad = _scan(split_dir, classes=classes, extensions=extensions, workers=workers)
    _report(bad, where=split_dir, on_error=on_error)
    return samples, classes, [p for p, _ in bad]


def decode_rgb(path: str | Path) -> torch.Tensor:
    """Decode an image file to uint8 RGB (3, H, W) with PIL (libjpeg-turbo for JPEG; decoding
    releases the GIL, so threads decode in parallel). Not ``torchvision.io.decode_image``:
    torchvision 0.29 deprecated its image decoders in favour of TorchCodec."""
    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"))  # a writable copy, (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


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
    ) -> None:
        self.samples, self.classes, self.skipped = scan_image_folder(
            root, split=split, extensions=extensions, on_error=on_error, classes=classes
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
    cache = None
    if cache_dir is not None:
        files, cls = _list(split_dir, classes)
        key = _cache_key(files, classes=cls, size=size, extensions=extensions)
        cache = Path(cache_dir) / f"{name}-{split}-{key}.safetensors"
        if cache.is_file():
            with safe_open(str(cache), framework="pt") as f:
                meta = f.metadata()
                images, labels = f.get_tensor("images"), f.get_tensor("labels")
            _report([(Path(p), why) for p, why in json.loads(meta["skipped"])], where=split_dir, on_error=on_error)
            return ArrayDataset(images=images, labels=labels, classes=json.loads(meta["classes"]), name=name)
    samples, cls, bad = _scan(split_dir, classes=classes, extensions=extensions, workers=workers)
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
