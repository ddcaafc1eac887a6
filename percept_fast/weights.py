"""Loading weights from local files (never from the network).

- :func:`load_state_dict_file` reads a state dict from ``.pth`` / ``.pt`` / ``.bin`` (``torch.load`` with
  ``weights_only=True`` on the CPU) or ``.safetensors`` (with the ``safetensors`` package when installed,
  else with a small built-in reader of the format),
  unwraps the usual containers (``{"state_dict": ...}``, ``{"model": ...}``) and strips a DataParallel
  ``module.`` prefix.
- :func:`load_into` loads a state dict into a module and raises a ``ValueError`` that names the file and
  the missing / unexpected / mis-shaped keys instead of PyTorch's generic error.
- :func:`load_lpips_lin_weights` reads the LPIPS linear-layer weights (``lin0.model.1.weight`` ...
  ``linN.model.1.weight``, each ``[1, C, 1, 1]``, as in lpips' ``weights/v0.1/{alex,vgg,squeeze}.pth``)
  and returns them as a list of 1-D ``[C]`` tensors in layer order.
- :func:`lpips_lin_weights_path` locates those files inside the installed ``lpips`` package (read locally;
  the package is not imported, so torchvision is not needed for it).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "load_state_dict_file",
    "load_into",
    "load_lpips_lin_weights",
    "lpips_lin_weights_path",
    "LPIPS_NETS",
]

# lpips backbone name -> number of linear layers in its shipped weights
LPIPS_NETS = {"alex": 5, "vgg": 5, "squeeze": 7}

_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "params")


def _as_path(path: str | os.PathLike, what: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what}: expected a file path (str or os.PathLike), got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what}: weight file not found: {str(p)!r}")
    return p


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    # Unwrap {"state_dict": {...}} style containers (checkpoints written by training scripts).
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in _CONTAINER_KEYS:
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
            else:
                break
        else:
            break
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{str(path)!r}: expected a state dict (mapping of names to tensors), got {type(obj).__name__}"
        )
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise ValueError(f"{str(path)!r}: state dict key {k!r} is not a string")
        if not isinstance(v, torch.Tensor):
            continue  # e.g. metadata entries such as "epoch"
        out[k] = v
    if not out:
        raise ValueError(f"{str(path)!r}: the file holds no tensors")
    if all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file onto the CPU.

    ``.safetensors`` files are read with the ``safetensors`` package or, without it, a built-in reader;
    everything else is read with
    ``torch.load(..., map_location="cpu", weights_only=True)`` (no arbitrary code is executed).
    Raises ``FileNotFoundError`` naming the path when it does not exist and ``ValueError`` when the
    file holds no state dict.
    """
    p = _as_path(path)
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            obj = _read_safetensors(p)  # the format is simple enough to read without the package
        else:
            obj = load_file(str(p), device="cpu")
    else:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{str(p)!r}: could not read a PyTorch state dict: {e}") from e
    return _unwrap(obj, p)


_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_safetensors(p: Path) -> dict[str, torch.Tensor]:
    """Minimal reader of the safetensors format (used when the ``safetensors`` package is not installed).

    Layout: an 8-byte little-endian header size ``n``, ``n`` bytes of JSON mapping each name to
    ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end of the header; an
    optional ``"__metadata__"`` entry), then the little-endian tensor bytes.
    """
    import json
    import struct
    import sys

    data = p.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{str(p)!r}: not a safetensors file (shorter than its 8-byte header size)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"{str(p)!r}: not a safetensors file (header size {n} exceeds the file)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(p)!r}: not a safetensors file (bad JSON header: {e})") from e
    body = memoryview(data)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _ST_DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{str(p)!r}: bad safetensors entry {name!r}: {info!r}") from e
        itemsize = torch.empty((), dtype=dtype).element_size()
        numel = 1
        for d in shape:
            numel *= d
        if not (0 <= begin <= end <= len(body)) or end - begin != numel * itemsize:
            raise ValueError(f"{str(p)!r}: safetensors entry {name!r} has inconsistent offsets for its shape")
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        if sys.byteorder != "little" and itemsize > 1:  # pragma: no cover - big-endian hosts
            t = t.view(torch.uint8).view(-1, itemsize).flip(1).reshape(-1).view(dtype)
        out[name] = t.reshape(shape)
    return out


def _fmt_keys(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    s = ", ".join(keys[:limit])
    if len(keys) > limit:
        s += f", ... ({len(keys) - limit} more)"
    return s


def load_into(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str | os.PathLike | None = None,
    ignore_prefixes: Iterable[str] = (),
) -> None:
    """Strictly load ``state_dict`` into ``module``; keys starting with ``ignore_prefixes`` are dropped.

    Raises ``ValueError`` naming ``source`` (the file) and the missing, unexpected and mis-shaped keys.
    """
    ignore = tuple(ignore_prefixes)
    sd = {k: v for k, v in state_dict.items() if not (ignore and k.startswith(ignore))}
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    mis_shaped = [
        f"{k} (file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
        for k in sd
        if k in own and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mis_shaped:
        where = f"{str(source)!r}" if source is not None else "state dict"
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt_keys(unexpected)}")
        if mis_shaped:
            parts.append(f"shape mismatch: {_fmt_keys(mis_shaped, 6)}")
        raise ValueError(f"{where} does not fit {type(module).__name__}: " + "; ".join(parts))
    # num_batches_tracked may be absent from older checkpoints: keep the module's own value then.
    for k in own:
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = own[k]
    module.load_state_dict(sd, strict=True)


def lpips_lin_weights_path(net: str, version: str = "0.1") -> Path:
    """Path of the linear-layer weights shipped inside the installed ``lpips`` package (not imported)."""
    if net not in LPIPS_NETS:
        raise ValueError(f"net: the lpips package ships linear weights for {sorted(LPIPS_NETS)}, got {net!r}")
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "lin_weights='lpips' reads the weights shipped inside the 'lpips' package, which is not installed "
            "(pip install lpips==0.1.4, or pass the path of a lin-weights file)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    p = root / "weights" / f"v{version}" / f"{net}.pth"
    if not p.is_file():
        raise FileNotFoundError(f"lpips weights for net={net!r} v{version} not found at {str(p)!r}")
    return p


_LIN_KEY = re.compile(r"^(?:.*\.)?lin(\d+)\.model\.(\d+)\.weight$")


def load_lpips_lin_weights(
    path: str | os.PathLike | Mapping[str, torch.Tensor], channels: Iterable[int] | None = None
) -> list[torch.Tensor]:
    """LPIPS linear-layer weights from a file (or an already loaded state dict) as ``[C]`` tensors.

    Keys ``lin{i}.model.{j}.weight`` (``j`` is 1 with dropout, 0 without; any prefix such as ``net.`` is
    accepted; other keys, e.g. a backbone's, are ignored). The indices must run ``0..N-1`` without gaps.
    When ``channels`` is given the count and each ``C`` are checked against it.
    """
    if isinstance(path, Mapping):
        sd, src = dict(path), "state dict"
    else:
        sd, src = load_state_dict_file(path), repr(str(path))
    found: dict[int, torch.Tensor] = {}
    for k, v in sd.items():
        m = _LIN_KEY.match(k)
        if m is None:
            continue
        i = int(m.group(1))
        if i in found:
            raise ValueError(f"{src}: two weights for linear layer lin{i}")
        if v.dim() != 4 or v.shape[0] != 1 or v.shape[2] != 1 or v.shape[3] != 1:
            raise ValueError(f"{src}: {k} has shape {tuple(v.shape)}, expected [1, C, 1, 1] (a 1x1 conv to 1 channel)")
        found[i] = v.detach().reshape(-1).clone()
    if not found:
        raise ValueError(f"{src}: no LPIPS linear-layer weights (keys 'lin<i>.model.<j>.weight') in the file")
    n = max(found) + 1
    gaps = [f"lin{i}" for i in range(n) if i not in found]
    if gaps:
        raise ValueError(f"{src}: missing linear-layer weights: {', '.join(gaps)}")
    out = [found[i] for i in range(n)]
    if channels is not None:
        channels = list(channels)
        if len(channels) != n:
            raise ValueError(f"{src}: holds {n} linear layers, the backbone taps {len(channels)} layers")
        bad = [f"lin{i} ({w.numel()} vs {c})" for i, (w, c) in enumerate(zip(out, channels)) if w.numel() != c]
        if bad:
            raise ValueError(f"{src}: channel counts do not match the backbone taps: {', '.join(bad)}")
    return out
