"""A plain GPT (pre-LayerNorm, GELU MLP, tied embeddings, learned positions) with PyTorch SDPA attention.

Shapes named as in the Megatron-LM paper (Shoeybi et al. 2019, table 1) and GPT-3 for 175B."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from validator.bench.formulas import gpt_model_flops, gpt_params


@dataclass(frozen=True)
class GptConfig:
    name: str
    layers: int
    hidden: int
    heads: int
    vocab: int = 51200
    seq: int = 1024
    min_gpus: int = 1  # below this the fp32 weights + Adam state cannot fit in 80 GB cards

    @property
    def params(self) -> int:
        return gpt_params(self.layers, self.hidden, self.vocab, self.seq)

    def flops_per_iter(self, batch: int) -> float:
        return gpt_model_flops(batch, self.seq, self.layers, self.hidden, self.vocab)


CONFIGS = {
    c.name: c
    for c in (
        GptConfig("gpt-1.2b", layers=40, hidden=1536, heads=16),
        GptConfig("gpt-8.3b", layers=72, hidden=3072, heads=32, min_gpus=4),
        GptConfig("gpt-175b", layers=96, hidden=12288, heads=96, seq=2048, min_gpus=64),
        # For CI and CPU smoke runs.
        GptConfig("gpt-tiny", layers=2, hidden=64, heads=4, vocab=256, seq=32),
    )
}


def get_config(name: str) -> GptConfig:
    try:
        return CONFIGS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown GPT config {name!r}; known: {', '.join(CONFIGS)}") from None


def build(torch, cfg: GptConfig):
    """The model as a torch.nn.Module (torch is passed in: validator never imports it at top level)."""
    return _classes(torch)[2](cfg)


@functools.lru_cache(maxsize=None)
def _classes(torch):
    """The module classes, made once: torch.compile guards on a module's type, so a class made anew for each
    model would recompile every block graph for every model (and fall back to eager past the recompile limit)."""
    nn = torch.nn
    F = torch.nn.functional

    class Attention(nn.Module):
        def __init__(self, cfg: GptConfig):
            super().__init__()
            self.heads = cfg.heads
            self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
            self.proj = nn.Linear(cfg.hidden, cfg.hidden)

        def forward(self, x):
            b, s, h = x.shape
            q, k, v = self.qkv(x).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).reshape(b, s, h))

    class Block(nn.Module):
        def __init__(self, cfg: GptConfig):
            super().__init__()
            self.ln1 = nn.LayerNorm(cfg.hidden)
            self.attn = Attention(cfg)
            self.ln2 = nn.LayerNorm(cfg.hidden)
            self.fc = nn.Linear(cfg.hidden, 4 * cfg.hidden)
            self.out = nn.Linear(4 * cfg.hidden, cfg.hidden)

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self, cfg: GptConfig):
            super().__init__()
            self.vocab = cfg.vocab
            self.wte = nn.Embedding(cfg.vocab, cfg.hidden)
            self.wpe = nn.Embedding(cfg.seq, cfg.hidden)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
            self.ln_f = nn.LayerNorm(cfg.hidden)
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, std=0.02)
                    if getattr(m, "bias", None) is not None:
                        nn.init.zeros_(m.bias)

        def forward(self, idx, targets):
            pos = torch.arange(idx.shape[1], device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for blk in self.blocks:
                x = blk(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)  # tied output layer
            return F.cross_entropy(logits.float().view(-1, self.vocab), targets.reshape(-1))

    return Attention, Block, GPT
