"""Read any layer's output as a B × C × h × w map, and write an edited map back.

    m = to_map(out, model)                  # B×C×h×w from B×C×H×W, B×N×C tokens or B×H×W×C
    out2 = from_map(m * mask, like=out, model=model)   # back in the layer's own layout
    set_layout(model, Layout("tokens", grid=(14, 14), prefix=1))   # what --layout/--grid/--prefix say
    r = resolve(out, model)                 # Resolved(kind="tokens", grid=(14, 14), prefix=1)

Layouts (`--layout auto|nchw|nhwc|tokens`):
- nchw: B × C × H × W, as a CNN gives it.
- tokens: B × N × C, a vision transformer's tokens. The first `prefix` tokens (class, register)
  are dropped and the rest read row-major as an h × w grid, h·w = N − prefix. The grid comes
  from `--grid`, else from the model (`patch_embed.grid_size` as timm and the ToyWorld ViT
  say it), else from a square; the prefix from `--prefix`, else the model
  (`num_prefix_tokens`, or a torchvision ViT's `class_token`), else whichever of 0 or 1 leaves
  a square. A unit of a token layer is one channel at every patch token; edits leave the
  prefix tokens alone unless `include_prefix` (then the edit also sees them, as a 1 × P map).
- nhwc: B × H × W × C, channels-last (timm `output_fmt="NHWC"`, Swin stages).
- auto (default): 4-d is nchw, or nhwc when the model's `output_fmt` is NHWC (conv and norm
  modules inside it still give nchw); 3-d is tokens; other ranks are left as they are.

hooks.capture and hooks.intervene read every layer through this module with the layout set on
the model (`set_layout`, default auto), so dissection and every intervention work on token
and channels-last layers unchanged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from dissect.errors import LayoutError

KINDS = ("auto", "nchw", "nhwc", "tokens")
_ATTR = "_dissect_layout"
_NCHW_MODULES = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.GroupNorm)


@dataclass(frozen=True)
class Layout:
    """What the user asked for: kind (auto|nchw|nhwc|tokens), grid, prefix, include_prefix."""
    kind: str = "auto"
    grid: tuple[int, int] | None = None
    prefix: int | None = None
    include_prefix: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LayoutError(f"--layout {self.kind}: choose one of {', '.join(KINDS)}")
        if self.prefix is not None and self.prefix < 0:
            raise LayoutError(f"--prefix {self.prefix}: the number of leading class/register "
                              "tokens is 0 or more")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = format_grid(self.grid)
        return d


@dataclass(frozen=True)
class Resolved:
    """How one output reads: kind nchw|nhwc|tokens|raw, its grid and prefix token count."""
    kind: str
    grid: tuple[int, int] | None = None
    prefix: int = 0
    include_prefix: bool = False


def parse_grid(text: str | tuple | None) -> tuple[int, int] | None:
    """`"14x14"` (or `"14"`, or a pair) -> (14, 14); None stays None."""
    if text is None or text == "":
        return None
    if isinstance(text, (tuple, list)):
        h, w = (int(v) for v in text)
    else:
        parts = str(text).lower().replace("×", "x").split("x")
        try:
            h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        except (ValueError, IndexError):
            raise LayoutError(f"--grid {text}: give the patch grid as HxW, e.g. --grid 14x14") from None
    if h < 1 or w < 1:
        raise LayoutError(f"--grid {text}: both sides must be at least 1, e.g. --grid 14x14")
    return h, w


def format_grid(grid: tuple[int, int] | None) -> str | None:
    return None if grid is None else f"{grid[0]}x{grid[1]}"


def layout_from(kind: str | None = "auto", grid=None, prefix: int | None = None,
                include_prefix: bool = False) -> Layout:
    """A Layout from CLI/config values (`grid` as "HxW")."""
    return Layout(kind or "auto", parse_grid(grid), None if prefix is None else int(prefix),
                  bool(include_prefix))


def add_layout_options(p) -> None:
    """The --layout/--grid/--prefix/--include-prefix options of a command."""
    p.add_argument("--layout", default=None, choices=KINDS,
                   help="how layer outputs read as maps (default auto: 4-d nchw, 3-d tokens)")
    p.add_argument("--grid", default=None, metavar="HxW",
                   help="a token layer's patch grid (default: the model's, else a square)")
    p.add_argument("--prefix", type=int, default=None, metavar="P",
                   help="leading class/register tokens to drop (default: the model's, else 0 or 1)")
    p.add_argument("--include-prefix", action="store_true",
                   help="interventions also edit the prefix (class/register) tokens")


def layout_from_args(args, base: dict | None = None) -> Layout:
    """The Layout of parsed options, each unset one taken from `base` (a run's config)."""
    base = base or {}
    pick = lambda k: getattr(args, k, None) if getattr(args, k, None) is not None \
        else base.get(k)  # noqa: E731
    return layout_from(pick("layout") or "auto", pick("grid"), pick("prefix"),
                       bool(getattr(args, "include_prefix", False) or base.get("include_prefix")))


def set_layout(model: nn.Module, layout: Layout | None) -> None:
    """Make every capture/intervene on `model` read its layers in `layout` (None: auto)."""
    object.__setattr__(model, _ATTR, layout or Layout())


def get_layout(model: nn.Module | None) -> Layout:
    return getattr(model, _ATTR, None) or Layout()


def model_grid(model: nn.Module | None) -> tuple[int, int] | None:
    """The patch grid the model says it has (timm / ToyWorld ViT `patch_embed.grid_size`)."""
    pe = getattr(model, "patch_embed", None)
    g = getattr(pe, "grid_size", None)
    if g is not None:
        try:
            h, w = (int(v) for v in g)
            return h, w
        except (TypeError, ValueError):
            return None
    image, patch = getattr(model, "image_size", None), getattr(model, "patch_size", None)
    if isinstance(image, int) and isinstance(patch, int) and patch > 0:   # torchvision ViT
        return image // patch, image // patch
    return None


def model_prefix(model: nn.Module | None) -> int | None:
    """Leading non-patch tokens the model says it has (timm `num_prefix_tokens`, class token)."""
    n = getattr(model, "num_prefix_tokens", None)
    if isinstance(n, int):
        return n
    if isinstance(getattr(model, "class_token", None), torch.Tensor):   # torchvision ViT
        return 1
    return None


def model_says_nhwc(model: nn.Module | None) -> bool:
    fmt = getattr(model, "output_fmt", None)
    return str(getattr(fmt, "value", fmt) or "").upper() == "NHWC"


def _square(n: int) -> int | None:
    r = math.isqrt(n) if n > 0 else 0
    return r if r > 0 and r * r == n else None


def _token_grid(n: int, model, layout: Layout, where: str) -> tuple[tuple[int, int], int]:
    if layout.prefix is not None:
        prefixes = [layout.prefix]
    else:        # what the model says, else none (a patch embedding's output), else a class token
        said = model_prefix(model)
        prefixes = list(dict.fromkeys(([said] if said is not None else []) + [0, 1]))
    if layout.grid is not None:
        h, w = layout.grid
        p = n - h * w if layout.prefix is None else layout.prefix
        if p < 0 or h * w + p != n:
            raise LayoutError(f"{where}: {n} tokens do not hold a {h}x{w} grid"
                              f"{f' after {p} prefix tokens' if p >= 0 else ''}; "
                              f"check --grid and --prefix (h*w + prefix must be {n})")
        return (h, w), p
    g = model_grid(model)
    if g is not None:
        for p in prefixes:
            if g[0] * g[1] + p == n:
                return g, p
    for p in prefixes:
        s = _square(n - p)
        if s:
            return (s, s), p
    shown = f" after {layout.prefix} prefix tokens" if layout.prefix is not None else \
        f" after {' or '.join(map(str, prefixes))} prefix tokens"
    raise LayoutError(f"{where}: {n} tokens are not a square grid{shown}; give the grid with "
                      f"--grid HxW (and --prefix P for class/register tokens)")


def resolve(output: torch.Tensor, model: nn.Module | None = None, layout: Layout | None = None,
            module: nn.Module | None = None, name: str = "") -> Resolved:
    """How `output` reads as a map under `layout` (default: the one set on `model`)."""
    layout = layout or get_layout(model)
    where = f"layer '{name}' (output {list(output.shape)})" if name else \
        f"output {list(output.shape)}"
    kind = layout.kind
    if kind == "auto":
        if output.dim() == 4:
            kind = "nhwc" if model_says_nhwc(model) and not isinstance(module, _NCHW_MODULES) \
                else "nchw"
        elif output.dim() == 3:
            kind = "tokens"
        else:
            return Resolved("raw")
    if kind in ("nchw", "nhwc") and output.dim() != 4:
        raise LayoutError(f"--layout {kind} on {where}: a {output.dim()}-d output is not "
                          f"B x {'C x H x W' if kind == 'nchw' else 'H x W x C'}; use --layout "
                          f"{'tokens' if output.dim() == 3 else 'auto'}")
    if kind == "nchw":
        return Resolved("nchw", tuple(output.shape[2:]))
    if kind == "nhwc":
        return Resolved("nhwc", tuple(output.shape[1:3]))
    if output.dim() != 3:
        raise LayoutError(f"--layout tokens on {where}: tokens are B x N x C (3-d); use "
                          "--layout auto")
    grid, prefix = _token_grid(int(output.shape[1]), model, layout, where)
    return Resolved("tokens", grid, prefix, layout.include_prefix)


def to_map(output: torch.Tensor, model: nn.Module | None = None, layout: Layout | None = None,
           *, resolved: Resolved | None = None, **kw) -> torch.Tensor:
    """`output` as B × C × h × w (a view for nchw/nhwc, a copy for tokens); raw ranks unchanged."""
    r = resolved or resolve(output, model, layout, **kw)
    if r.kind == "nhwc":
        return output.permute(0, 3, 1, 2)
    if r.kind == "tokens":
        b, _, c = output.shape
        h, w = r.grid
        return output[:, r.prefix:].transpose(1, 2).reshape(b, c, h, w)
    return output


def prefix_map(output: torch.Tensor, resolved: Resolved) -> torch.Tensor:
    """The prefix tokens of a token output as a B × C × 1 × P map (for --include-prefix edits)."""
    return output[:, :resolved.prefix].transpose(1, 2).unsqueeze(2)


def from_map(m: torch.Tensor, like: torch.Tensor, model: nn.Module | None = None,
             layout: Layout | None = None, *, resolved: Resolved | None = None,
             prefix: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """The B × C × h × w map `m` written back in the layout of `like` (differentiable).

    Tokens: the patch tokens come from `m`, the prefix tokens from `prefix` (a B × C × 1 × P
    map) when given, else unchanged from `like`."""
    r = resolved or resolve(like, model, layout, **kw)
    if r.kind == "nhwc":
        return m.permute(0, 2, 3, 1).contiguous()
    if r.kind == "tokens":
        b, c = m.shape[:2]
        patches = m.reshape(b, c, -1).transpose(1, 2)
        head = like[:, :r.prefix] if prefix is None else prefix.squeeze(2).transpose(1, 2)
        return torch.cat([head.to(patches.dtype), patches], 1)
    return m


def edit_in_layout(edit, output: torch.Tensor, model: nn.Module | None = None,
                   module: nn.Module | None = None, name: str = "") -> torch.Tensor:
    """Apply a map edit (B×C×h×w -> B×C×h×w) to `output` in its own layout."""
    r = resolve(output, model, module=module, name=name)
    if r.kind in ("nchw", "raw"):
        return edit(output)
    new = edit(to_map(output, resolved=r))
    head = edit(prefix_map(output, r)) if r.kind == "tokens" and r.include_prefix and r.prefix \
        else None
    return from_map(new, output, resolved=r, prefix=head)


def capture_map(output: torch.Tensor, model: nn.Module | None = None,
                module: nn.Module | None = None, name: str = "") -> torch.Tensor:
    """A detached B×C×h×w copy of `output` for hooks.capture. Auto layouts that cannot be read
    keep the raw output (the tool that needs a map says why, via `resolve`)."""
    out = output.detach()
    try:
        m = to_map(out, model, module=module, name=name)
    except LayoutError:
        if get_layout(model).kind != "auto":
            raise
        m = out
    if m.untyped_storage().data_ptr() == out.untyped_storage().data_ptr():
        m = m.clone(memory_format=torch.contiguous_format)
    return m


__all__ = ["Layout", "LayoutError", "Resolved", "KINDS", "parse_grid", "format_grid",
           "layout_from", "layout_from_args", "add_layout_options", "set_layout", "get_layout", "resolve", "to_map", "from_map",
           "prefix_map", "edit_in_layout", "capture_map", "model_grid", "model_prefix"]
