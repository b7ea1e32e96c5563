"""CUDA graphs of a cross-attention block's forward and backward (`xattn_cuda_graph: true`).

Why: on a GPU an SSN-ResNet50 training step at B=32 is host-bound (about 35 ms of host work
against 16 ms of GPU kernels on an H200), and each cross-attention block adds about 90 tensor ops of
host work per step (LayerNorm, one QKV GEMM, the core, projections, autocast weight casts and their
backward), whichever core runs inside. Replaying the block as two CUDA graphs (forward, backward)
turns those ops into one input copy and one graph launch each way, so the block costs about its
GPU time.

How (the recipe of `torch.cuda.make_graphed_callables`, with three differences):
- captures are made lazily, per input signature (shapes, strides, dtypes, autocast state, the
  block's `impl`, parameter addresses), at most `max_signatures` of them, least recent evicted;
- parameter gradients are handed to autograd as the graph's static tensors, still referenced here,
  so `AccumulateGrad` copies or adds them and never steals them: a stolen static buffer would be
  overwritten by the next replay (wrong gradients under gradient accumulation);
- a forward whose previous graphed forward is still waiting for its backward runs eagerly (its
  saved activations live in the graph's memory), as do calls outside training, without
  gradients, off CUDA, inside another capture, under torch.compile or tracing.
Warm-up and capture follow the PyTorch recipe (side-stream warm-up, one private memory pool per
signature); capture uses `capture_error_mode="thread_local"` so that other threads (the DataLoader's
pin-memory thread) may keep using CUDA. A capture that fails raises, naming the option to turn off.
The module itself is left untouched (no patched `forward`, no state-dict change).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

WARMUP_STEPS = 3  # side-stream warm-up before capture: Triton autotune, cuDNN/cuBLAS workspaces


@dataclass(eq=False)
class _Capture:
    """One signature's graphs and static tensors."""

    fwd: Any  # torch.cuda.CUDAGraph
    bwd: Any
    inputs: list[Tensor]
    outputs: list[Tensor]
    grad_outputs: list[Tensor]
    grads: list[Tensor | None]  # per input, then per parameter; None where no gradient is needed
    pending: bool = False  # a graphed forward's backward has not run yet
    epoch: int = 0


class _PendingToken:
    """Lives on the autograd node of one graphed forward: when the node is freed without its
    backward having run (a forward whose loss was dropped), the capture is free again."""

    def __init__(self, cap: _Capture) -> None:
        self.cap, self.epoch = weakref.ref(cap), cap.epoch

    def __del__(self) -> None:
        cap = self.cap()
        if cap is not None and cap.epoch == self.epoch:
            cap.pending = False


class _Replay(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, cap: _Capture, n_inputs: int, *args: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        for static, x in zip(cap.inputs, args[:n_inputs], strict=True):
            if static.data_ptr() != x.data_ptr():
                static.copy_(x)
        cap.fwd.replay()
        cap.epoch += 1
        cap.pending = True
        ctx.cap, ctx.epoch, ctx.token = cap, cap.epoch, _PendingToken(cap)
        return tuple(o.detach() for o in cap.outputs)

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        cap = ctx.cap
        if ctx.epoch != cap.epoch:  # cannot happen while `pending` routes later calls eagerly
            raise RuntimeError("graphed cross-attention block: backward of a stale forward")
        for static, g in zip(cap.grad_outputs, grad_outputs, strict=True):
            if g is None:
                static.zero_()
            elif static.data_ptr() != g.data_ptr():
                static.copy_(g)
        cap.bwd.replay()
        cap.pending = False
        # static tensors, not detached copies: this reference keeps AccumulateGrad from stealing them
        return (None, None, *cap.grads)


_WARMUP_STREAMS: dict[torch.device, Any] = {}


def warmup_stream(device: torch.device) -> Any:
    """One side stream per device for every CUDA-graph warm-up (the kernel benchmark's too). Why:
    cuBLAS keeps a workspace (32 MiB on Hopper) per stream it has run on, allocated from the caching
    allocator and never freed; a fresh stream per capture cycles through the 32-stream pool and pins
    about 1 GiB."""
    stream = _WARMUP_STREAMS.get(device)
    if stream is None:
        stream = _WARMUP_STREAMS[device] = torch.cuda.Stream(device)
    return stream


def _as_tuple(out: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    return (out,) if isinstance(out, Tensor) else tuple(out)


class BlockGraphs:
    """Graphed calls of one block: `stacked(x, batch)` for `block.forward_stacked`, `pair(f_c, f_d)`
    for `block.forward`. Falls back to the eager call wherever a graph would be wrong (module
    docstring)."""

    def __init__(self, block: nn.Module, max_signatures: int = 2) -> None:
        self.block = block
        self.max_signatures = max_signatures
        self.captures: OrderedDict[tuple, _Capture] = OrderedDict()
        self.replays = 0  # graphed calls so far (tests, reports)
        self.eager_calls = 0

    def __deepcopy__(self, memo: dict) -> BlockGraphs:  # copies start without captures
        import copy

        return BlockGraphs(copy.deepcopy(self.block, memo), self.max_signatures)

    def __getstate__(self) -> dict[str, Any]:
        return {"block": self.block, "max_signatures": self.max_signatures}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["block"], state["max_signatures"])

    def clear(self) -> None:
        """Drop every capture (its graphs and memory pool); a forward still awaiting its backward
        keeps its own capture alive until then."""
        self.captures.clear()

    def stacked(self, x: Tensor, batch: int) -> Tensor:
        out = self._call(("stacked", batch), lambda t: self.block.forward_stacked(t, batch), (x,))
        return out[0]

    def pair(self, f_c: Tensor, f_d: Tensor) -> tuple[Tensor, Tensor]:
        c, d = self._call(("pair",), self.block, (f_c, f_d))
        return c, d

    # -- internals -----------------------------------------------------------------------------------
    def _params(self) -> list[nn.Parameter]:
        return [p for p in self.block.parameters() if p.requires_grad]

    def _eligible(self, inputs: Sequence[Tensor], params: list[nn.Parameter]) -> bool:
        # is_compiling() first: Dynamo folds it to True, so nothing below is traced
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        x = inputs[0]
        return (
            x.is_cuda
            and self.block.training
            and torch.is_grad_enabled()
            and (bool(params) or any(t.requires_grad for t in inputs))
            and not torch.cuda.is_current_stream_capturing()
        )

    def _call(self, kind: tuple, fn: Callable[..., Any], inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        params = self._params()
        if not self._eligible(inputs, params):
            self.eager_calls += 1
            return _as_tuple(fn(*inputs))
        amp = torch.is_autocast_enabled("cuda")
        key = (
            kind,
            tuple((t.shape, t.stride(), t.dtype, t.requires_grad, t.device) for t in inputs),
            amp,
            torch.get_autocast_dtype("cuda") if amp else None,
            getattr(self.block, "impl", None),
            tuple(p.data_ptr() for p in params),
        )
        cap = self.captures.get(key)
        if cap is not None and cap.pending:  # the previous graphed forward still awaits its backward
            self.eager_calls += 1
            return _as_tuple(fn(*inputs))
        if cap is None:
            cap = self._capture(fn, inputs, params, amp)
            self.captures[key] = cap
            while len(self.captures) > self.max_signatures:
                self.captures.popitem(last=False)  # a pending node keeps its own capture alive
        self.captures.move_to_end(key)
        self.replays += 1
        return _Replay.apply(cap, len(inputs), *inputs, *params)

    def _capture(
        self, fn: Callable[..., Any], inputs: Sequence[Tensor], params: list[nn.Parameter], amp: bool
    ) -> _Capture:
        dtype = torch.get_autocast_dtype("cuda")
        static_in = [
            torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
            .copy_(t.detach())
            .requires_grad_(t.requires_grad)
            for t in inputs
        ]
        targets = [t for t in static_in if t.requires_grad] + list(params)

        def run() -> tuple[Tensor, ...]:
            # the autocast weight cache must be off: a cached cast would be a tensor outside the graph
            with torch.autocast("cuda", dtype=dtype, enabled=amp, cache_enabled=False):
                return _as_tuple(fn(*static_in))

        side = warmup_stream(inputs[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                outs = run()
                torch.autograd.grad(outs, targets, [torch.ones_like(o) for o in outs], allow_unused=True)
        torch.cuda.current_stream().wait_stream(side)
        del outs

        # thread_local: the DataLoader's pin-memory thread may allocate pinned memory meanwhile (as
        # in torch.compile's CUDA graph trees); the backward still runs on autograd's device thread
        pool = torch.cuda.graph_pool_handle()
        fwd, bwd = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(fwd, pool=pool, capture_error_mode="thread_local"):
                outs = run()
            grad_outs = [torch.empty_like(o) for o in outs]
            with torch.cuda.graph(bwd, pool=pool, capture_error_mode="thread_local"):
                target_grads = torch.autograd.grad(outs, targets, grad_outs, allow_unused=True)
        except Exception as err:  # a failed capture can leave CUDA state unusable: stop loudly
            raise RuntimeError(
                f"xattn_cuda_graph: capturing the cross-attention block ({type(self.block).__name__}) as "
                f"CUDA graphs failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "set `xattn_cuda_graph: false` in the model's options to run it eagerly"
            ) from err

        grads: list[Tensor | None] = []
        it = iter(target_grads)
        for t in static_in:
            grads.append(next(it) if t.requires_grad else None)
        grads.extend(it)  # one per parameter
        return _Capture(fwd, bwd, static_in, [o.detach() for o in outs], grad_outs, grads)
