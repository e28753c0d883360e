"""The ToyWorld ViT: a small vision transformer on the same scenes as the ToyWorld CNN.

    lm = load_toyworld_vit("default", "cpu")        # LoadedModel, class names = scene names
    logits = lm.model(lm.normalize(images01))        # images01: B×3×224×224 in [0, 1]
    tokens = lm.model.blocks[3](x)                    # B × (1 + 14·14) × 96, class token first

Architecture: the input is average-pooled to 112 inside the model (as the CNN does), a small
convolutional stem (three stride-2 3×3 convs, then a 1×1 projection: "Early Convolutions Help
Transformers See Better", Xiao et al. 2021) cuts it into a 14 × 14 grid of 8 px patches, a
class token and learned position embeddings are added, then `blocks.0` … `blocks.3`
(pre-norm multi-head attention + MLP), a final LayerNorm `norm`, a global max pool over the
patch tokens and a linear `head` (timm's `global_pool="max"`; the ToyWorld CNN also max-pools).
The class token takes part in attention but not in the head. Pooling the patch tokens is what
makes the last blocks' maps matter: read from the class token alone, the same network learned
half as fast (28% vs 58% on an unseen world after 16,000 image-steps), its blocks held no
concept at IoU >= 0.1, and no unit of its last block could change a prediction.
Every block returns B × N × C tokens with the class token first; the model says its grid the
way timm does (`patch_embed.grid_size`, `num_prefix_tokens`), so dissect.models.layout reads
the blocks as C units on a 14 × 14 map.
Weights: dissect/toyworld/weights/toyworld_vit.safetensors + toyworld_vit.json.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from dissect.toyworld.model import POOL_TO, WEIGHTS_DIR, load_weights
from dissect.toyworld.world import SCENE_NAMES

DEFAULT_VIT_WEIGHTS = WEIGHTS_DIR / "toyworld_vit.safetensors"
DIM = 96
DEPTH = 4
HEADS = 3
MLP_RATIO = 2
GRID = 14                     # 112 px / 8 px patches
STEM = (24, 48, 96)           # stem channels, each conv stride 2: 112 -> 56 -> 28 -> 14


class PatchEmbed(nn.Module):
    """Convolutional stem: B×3×112×112 -> B × 196 × dim tokens (row-major over the 14×14 grid)."""

    def __init__(self, dim: int = DIM, stem=STEM):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for c in stem:
            layers += [nn.Conv2d(cin, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            cin = c
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(cin, dim, 1)
        self.grid_size = (GRID, GRID)
        self.num_patches = GRID * GRID

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        return self.proj(a.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ToyWorldViT(nn.Module):
    """Conv stem to a 14×14 token grid, class token, 4 transformer blocks, max pool, linear head."""

    num_prefix_tokens = 1
    global_pool = "max"

    def __init__(self, num_classes: int = len(SCENE_NAMES), dim: int = DIM, depth: int = DEPTH,
                 heads: int = HEADS, mlp_ratio: int = MLP_RATIO):
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + GRID * GRID, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != POOL_TO or x.shape[-2] != POOL_TO:
            x = F.adaptive_avg_pool2d(x, POOL_TO)
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], 1) + self.pos_embed
        t = self.norm(self.blocks(t))
        return self.head(t[:, self.num_prefix_tokens:].amax(1))


def load_toyworld_vit(weights: str = "default", device: str = "cpu"):
    """The ToyWorld ViT as a LoadedModel: weights "default"/"DEFAULT", "none" or a file path."""
    from dissect.models.loaded import LoadedModel
    model = ToyWorldViT()
    label, mean, std, meta = load_weights(model, weights, DEFAULT_VIT_WEIGHTS, "ToyWorld ViT",
                                          "python -m dissect toyworld train --arch vit")
    model.eval().to(device)
    return LoadedModel(model, "toyworld-vit", label, list(SCENE_NAMES), mean, std,
                       input_size=224, device=device, meta=meta)
