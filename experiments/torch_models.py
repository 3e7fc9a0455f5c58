"""The peer of the benchmark: evonas's architectures written in PyTorch, trained one after another in eager mode.

This is how NNI or NASLib train candidates: one `nn.Module` per architecture, no compilation; the
benchmark runs it as one process per core with 1 intra-op thread each (NNI's `trialConcurrency`), and as
one process with 2 threads (the spec's `threads`), on the CPU or on CUDA (the spec's `device`). The modules do the same matmuls at the same shapes as evonas's
`TextClassifier` (embedding, positional table, pre-norm residual blocks, final LayerNorm,
pooling, head) and train with the same optimizers behind global-norm clipping at 1; they are
not meant to match it numerically (initialisers, GRU/LSTM biases and padding inside the
recurrences differ). Architectures arrive as `Architecture.to_dict()` dicts, so that this file
and its process import neither JAX nor evonas.
"""

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peak_memory import peak_rss_bytes
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu, "tanh": torch.tanh}
MASKED = -1e9


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x, mask):
        batch, length, width = x.shape
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.out(out.transpose(1, 2).reshape(batch, length, width))


class Convolution(nn.Module):
    def __init__(self, width: int, kernel_size: int, activation):
        super().__init__()
        self.conv, self.activation = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2), activation

    def forward(self, x, mask):
        x = (x * mask[..., None]).transpose(1, 2)
        return self.activation(self.conv(x).transpose(1, 2))


class GatedMLP(nn.Module):
    def __init__(self, width: int, expansion: int, activation):
        super().__init__()
        self.up, self.down = nn.Linear(width, 2 * expansion * width), nn.Linear(expansion * width, width)
        self.activation = activation

    def forward(self, x, mask):
        gate, value = self.up(x).chunk(2, dim=-1)
        return self.down(self.activation(gate) * value)


class Recurrent(nn.Module):
    def __init__(self, width: int, cell: str):
        super().__init__()
        self.rnn = (nn.GRU if cell == "gru" else nn.LSTM)(width, width, batch_first=True)

    def forward(self, x, mask):
        return self.rnn(x)[0]


def make_op(op: str, width: int, heads: int, expansion: int, activation) -> nn.Module:
    if op == "attention":
        return Attention(width, heads)
    if op.startswith("conv"):
        return Convolution(width, int(op[4:]), activation)
    if op == "gated_mlp":
        return GatedMLP(width, expansion, activation)
    if op in ("gru", "lstm"):
        return Recurrent(width, op)
    raise ValueError(f"the PyTorch peer has no op {op!r}")


def make_norm(norm: str, width: int) -> nn.Module:
    return {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}.get(norm, lambda _: nn.Identity())(width)


class Block(nn.Module):
    """Pre-norm residual block: x + dropout(op(norm(x))), padding zeroed."""

    def __init__(self, block: dict[str, str], arch: dict[str, Any]):
        super().__init__()
        width = arch["width"]
        self.norm = make_norm(block["norm"], width)
        self.op = make_op(block["op"], width, arch["heads"], arch["ffn_expansion"], ACTIVATIONS[block["activation"]])
        self.dropout = nn.Dropout(arch["dropout"])

    def forward(self, x, mask):
        return (x + self.dropout(self.op(self.norm(x), mask))) * mask[..., None]


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(-math.log(10000.0) * torch.arange(0, width, 2, dtype=torch.float32) / width)
    table = torch.zeros(length, width)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * frequency), torch.cos(position * frequency)
    return table


class TextClassifier(nn.Module):
    """Token ids [B, L] -> logits [B, C], the same layers as evonas.models.TextClassifier."""

    def __init__(self, arch: dict[str, Any], vocab_size: int, max_length: int, num_classes: int):
        super().__init__()
        width, self.pooling = arch["width"], arch["pooling"]
        self.embed = nn.Embedding(vocab_size, width)
        table = sinusoidal_positions(max_length, width) if arch["positional"] == "sinusoidal" else torch.zeros(
            max_length, width)
        self.position = nn.Parameter(0.02 * torch.randn(max_length, width)) if arch["positional"] == "learned" else None
        self.register_buffer("fixed_position", table)
        self.blocks = nn.ModuleList(Block(block, arch) for block in arch["blocks"])
        self.final_norm, self.head = nn.LayerNorm(width), nn.Linear(width, num_classes)

    def forward(self, tokens, mask):
        length = tokens.shape[1]
        position = self.position if self.position is not None else self.fixed_position
        x = (self.embed(tokens) + position[:length]) * mask[..., None]
        for block in self.blocks:
            x = block(x, mask)
        return self.head(pool(self.final_norm(x), mask, self.pooling))


def pool(x, mask, pooling: str):
    if pooling == "mean":
        return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    if pooling == "max":
        return x.masked_fill(~mask[..., None], MASKED).amax(1)
    if pooling == "first":
        return x[:, 0]
    last = (mask.sum(1) - 1).clamp(min=0)
    return x[torch.arange(x.shape[0]), last]


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023), which torch.optim lacks; decoupled weight decay as in optax.lion."""

    def __init__(self, params, lr: float, weight_decay: float, betas=(0.9, 0.99)):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": betas})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                momentum = self.state[p].setdefault("momentum", torch.zeros_like(p))
                update = (beta1 * momentum + (1 - beta1) * p.grad).sign_() + group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])
                momentum.mul_(beta2).add_(p.grad, alpha=1 - beta2)


def make_optimizer(arch: dict[str, Any], params) -> torch.optim.Optimizer:
    """evonas's optimizers: adamw, lion (lr / 10, weight decay x 10) or sgd with momentum 0.9 and added decay."""
    lr, wd = arch["learning_rate"], arch["weight_decay"]
    if arch["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if arch["optimizer"] == "lion":
        return Lion(params, lr=lr / 10.0, weight_decay=wd * 10.0)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)


def evaluate(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on a whole split, dropout off, read in batches of `batch_size` (as
    evonas scores a child on validation)."""
    model.eval()
    correct = loss = 0.0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            batch_tokens, batch_labels = tokens[start:start + batch_size], labels[start:start + batch_size]
            logits = model(batch_tokens, batch_tokens != 0)
            correct += (logits.argmax(-1) == batch_labels).sum().item()
            loss += F.cross_entropy(logits, batch_labels, reduction="sum").item()
    model.train()
    return correct / len(labels), loss / len(labels)


def train_loop(archs: list[dict[str, Any]], tokens: np.ndarray, labels: np.ndarray, vocab_size: int,
               num_classes: int, batch_size: int, steps: int, seed: int = 0, threads: int = 2, device: str = "cpu",
               validation: tuple[np.ndarray, np.ndarray] | None = None, eval_batch_size: int = 256) -> dict[str, Any]:
    """Trains every architecture for `steps` steps, one after the other, with `threads` intra-op threads on
    `device`; given a `validation` split (tokens, labels), scores each trained model on it. Times in seconds,
    taken after synchronizing the device.

    The first step of each architecture is timed apart (warm-up); steady-state time is the rest.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    tokens, labels = torch.from_numpy(tokens).long().to(device), torch.from_numpy(labels).long().to(device)
    if validation is not None:
        validation = tuple(torch.from_numpy(np.asarray(x)).long().to(device) for x in validation)
    generator = torch.Generator(device).manual_seed(seed)
    start = time.perf_counter()
    setup_seconds = first_step_seconds = steady_seconds = evaluation_seconds = 0.0
    final_losses, accuracies, validation_losses = [], [], []
    for arch in archs:
        setup_start = time.perf_counter()
        model = TextClassifier(arch, vocab_size, tokens.shape[1], num_classes).to(device)
        optimizer = make_optimizer(arch, model.parameters())
        setup_seconds += time.perf_counter() - setup_start
        for step in range(steps):
            step_start = time.perf_counter()
            rows = torch.randint(0, len(labels), (batch_size,), generator=generator, device=device)
            batch_tokens, batch_labels = tokens[rows], labels[rows]
            loss = F.cross_entropy(model(batch_tokens, batch_tokens != 0), batch_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step == 0 or step == steps - 1:
                sync()
            if step == 0:
                first_step_seconds += time.perf_counter() - step_start
            else:
                steady_seconds += time.perf_counter() - step_start
        final_losses.append(loss.item())
        if validation is not None:
            evaluation_start = time.perf_counter()
            accuracy, validation_loss = evaluate(model, *validation, eval_batch_size)
            accuracies.append(accuracy)
            validation_losses.append(validation_loss)
            evaluation_seconds += time.perf_counter() - evaluation_start
    result = {"total_seconds": time.perf_counter() - start, "setup_seconds": setup_seconds,
              "first_step_seconds": first_step_seconds, "steady_seconds": steady_seconds,
              "final_losses": final_losses}
    if validation is not None:
        result |= {"evaluation_seconds": evaluation_seconds, "validation_accuracies": accuracies,
                   "validation_losses": validation_losses}
    return result


def main(spec_path: str, result_path: str) -> None:
    """A child process of bench_population.py: the torch loop over the spec's architectures."""
    spec = json.loads(Path(spec_path).read_text())
    data, config = np.load(spec["data"]), spec["config"]
    memory_before = peak_rss_bytes()
    validation = None
    if spec.get("validation_data"):
        held_out = np.load(spec["validation_data"])
        validation = (held_out["tokens"], held_out["labels"])
    result = train_loop(spec["archs"], data["tokens"], data["labels"], spec["vocab_size"], spec["num_classes"],
                        config["batch_size"], config["steps"], threads=spec.get("threads", 2),
                        device=spec.get("device", "cpu"), validation=validation)
    losses = np.asarray(result["final_losses"])
    malloc_environment = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_"))
    result |= {
        "compile_seconds": 0.0,
        "steady_steps_per_member": config["steps"] - 1,
        "compilations": 0,
        "peak_memory_bytes": peak_rss_bytes(),
        "memory_before_method_bytes": memory_before,
        "allocator": f"glibc {malloc_environment}" if malloc_environment else "glibc default",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "mean_final_loss": float(np.mean(losses[np.isfinite(losses)])),
        "diverged": int(np.sum(~np.isfinite(losses))),
    }
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
