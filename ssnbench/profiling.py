"""Model cost: parameters, multiply-adds (fvcore) and measured throughput/memory.

Conventions used in every table built from this module:
- **GMACs**: fvcore counts one multiply-add as one "flop", so its totals are multiply-accumulates.
  We call them GMACs everywhere (1 GMAC = 2 GFLOP). Counted at batch 1 (one case: one image per
  modality the model consumes). Our attention op and PyTorch SDPA are counted through the handles of
  `ssnbench.kernels.flops.fvcore_handles()` (2·B·H·Lq·Lk·D per direction, QKᵀ and PV together).
- **images/s** counts every image a model consumes: two per case for two-image models (ssn, dual),
  one per case for single-modality models. `batch_size` is always per modality (cases per step).
- **peak memory**: on CUDA `torch.cuda.max_memory_allocated` over warm-up and timed steps (weights,
  optimizer state and activations). On CPU the increase of the process's peak resident set size
  over the timed block (Linux VmHWM, reset before it; `memory_kind` says which): it includes the
  allocator's and the inputs' share, so compare it only with other CPU numbers.

fvcore is imported lazily so that an environment without it (the lent GPU image) still measures
throughput; GMACs are then None with a note.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

PART_NAMES = ("encoder", "cross_attention", "heads")
MACS_CONVENTION = "GMACs (fvcore multiply-adds, batch 1; 1 GMAC = 2 GFLOP)"
IMAGES_CONVENTION = "images/s counts both modalities for two-image models, one image per case for single"

ImageSize = int | Sequence[int]


# --------------------------------------------------------------------------------------- parameters
def _unique_params(module: nn.Module) -> dict[int, nn.Parameter]:
    """Parameters by identity, so a module reused in two places (a shared encoder) counts once."""
    return {id(p): p for p in module.parameters()}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and per-part parameter counts; shared tensors are counted once.

    Parts come from `model.parts()` (encoder, cross_attention, heads). A tensor shared between two
    parts is attributed to the first part in that order, so the parts plus `other` (anything not
    in a part) always sum to `total`.
    """
    everything = _unique_params(model)
    counts: dict[str, int] = {"total": sum(p.numel() for p in everything.values())}
    parts: dict[str, nn.Module | None] = {}
    if hasattr(model, "parts"):
        parts = dict(model.parts())
    seen: set[int] = set()
    for name in (*PART_NAMES, *(k for k in parts if k not in PART_NAMES)):
        module = parts.get(name)
        params = _unique_params(module) if module is not None else {}
        fresh = {k: p for k, p in params.items() if k not in seen}
        seen.update(fresh)
        counts[name] = sum(p.numel() for p in fresh.values())
    counts["other"] = sum(p.numel() for k, p in everything.items() if k not in seen)
    counts["trainable"] = sum(p.numel() for p in everything.values() if p.requires_grad)
    return counts


# --------------------------------------------------------------------------------------- GMACs
def _pair(image_size: ImageSize) -> tuple[int, int]:
    """(clinic, derm) sizes: one int means both images are square of that size."""
    if isinstance(image_size, int):
        return image_size, image_size
    sizes = tuple(int(s) for s in image_size)
    if len(sizes) != 2:
        raise ValueError(f"image_size must be an int or (clinic, derm), got {image_size!r}")
    return sizes  # type: ignore[return-value]


def _example_images(batch: int, image_size: ImageSize, device: torch.device | str,
                    channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (never zero) images for both modalities."""
    s_c, s_d = _pair(image_size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    clinic = torch.randn(batch, 3, s_c, s_c, generator=gen).to(device, memory_format=fmt)
    derm = torch.randn(batch, 3, s_d, s_d, generator=gen).to(device, memory_format=fmt)
    return clinic, derm


def _flatten(out: Any) -> list[torch.Tensor]:
    """Every tensor of a (nested) dict/list/tuple output, in a stable order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flatten(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flatten(item)]
    return []


class _TupleOutput(nn.Module):
    """The JIT tracer behind fvcore wants tensors or tuples out; our models return dicts of lists."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(_flatten(self.model(*inputs)))


def attention_handles() -> tuple[dict[str, Callable[..., Any]], str | None]:
    """fvcore handles for our op and SDPA, and a note when the kernel package's are unavailable."""
    try:
        from ssnbench.kernels.flops import fvcore_handles
    except ImportError as err:  # one source of truth for the formula: never a local copy
        return {}, f"ssnbench.kernels.flops unavailable ({err}): attention ops not counted"
    return dict(fvcore_handles()), None


def gmacs_report(model: nn.Module, image_size: ImageSize | None = None,
                 inputs: Sequence[torch.Tensor] | None = None,
                 device: torch.device | str | None = None) -> dict[str, Any]:
    """fvcore multiply-adds at batch 1 with our attention handles.

    Returns `gmacs` (float or None), `unsupported_ops` (op -> count of ops fvcore skipped, i.e. not
    counted; elementwise ops fvcore ignores by design are not listed) and `note` (why gmacs is None,
    or which handles were used). `inputs` overrides the two random images (e.g. to count one block).
    """
    result: dict[str, Any] = {"gmacs": None, "unsupported_ops": {}, "note": None,
                              "convention": MACS_CONVENTION}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore's import touches deprecated torch.jit APIs
            from fvcore.nn import FlopCountAnalysis
    except ImportError:
        result["note"] = "fvcore not installed: GMACs not counted"
        return result
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
    if inputs is None:
        if image_size is None:
            raise ValueError("give image_size or inputs")
        inputs = _example_images(1, image_size, device)
    handles, note = attention_handles()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), _quiet_logger("fvcore"), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about python values in the graph
            analysis = FlopCountAnalysis(_TupleOutput(model), tuple(inputs))
            for name, handle in handles.items():
                analysis.set_op_handle(name, handle)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            total = analysis.total()
            result["unsupported_ops"] = dict(analysis.unsupported_ops())
    finally:
        model.train(was_training)
    result["gmacs"] = total / 1e9
    result["note"] = note
    return result


def count_gmacs(model: nn.Module, image_size: ImageSize | None = None,
                inputs: Sequence[torch.Tensor] | None = None,
                device: torch.device | str | None = None) -> float | None:
    """GMACs (fvcore multiply-adds) of one forward at batch 1; None when fvcore is missing.

    See `gmacs_report` for the ops fvcore could not count.
    """
    return gmacs_report(model, image_size, inputs=inputs, device=device)["gmacs"]


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --------------------------------------------------------------------------------------- throughput
def _modalities(model: nn.Module) -> int:
    """Images a model consumes per case (2 for ssn/dual, 1 for single)."""
    mods = getattr(model, "modalities", ("clinic", "derm"))
    return max(1, len(tuple(mods)))


class BenchLoss:
    """The loss of a benchmarked training step, against fixed random targets.

    A model that returns `{head: [8 logit tensors]}` (SSN, dual, single) gets the real training
    loss, `MultiHeadLoss` with the prior head weights, so a benchmarked step costs what a training
    step costs. Any other output gets a sum of cross-entropies over its logit tensors. The targets
    are drawn on the first call (a warm-up step) and kept on the logits' device: a timed step then
    copies nothing from the host (the real loop moves one [B, 8] label tensor per batch; drawing
    targets per step cost one blocking host->device copy, i.e. a stream sync, per logit tensor).
    """

    def __init__(self) -> None:
        self._targets: dict[Any, torch.Tensor] = {}
        self._multi_head: nn.Module | None = None

    def _target(self, key: Any, sizes: Sequence[int], batch: int, device: torch.device) -> torch.Tensor:
        key = (key, tuple(sizes), batch, device)
        target = self._targets.get(key)
        if target is None:
            gen = torch.Generator().manual_seed(len(self._targets))
            columns = [torch.randint(0, k, (batch,), generator=gen) for k in sizes]
            target = torch.stack(columns, 1).to(device)
            self._targets[key] = target
        return target

    def __call__(self, out: Any) -> torch.Tensor:
        from ssnbench.data.labels import LABELS
        from ssnbench.losses import HEADS, MultiHeadLoss, head_weights_for

        heads_output = isinstance(out, dict) and out and set(out) <= set(HEADS)
        logits = next(iter(out.values())) if heads_output else []
        if len(logits) == len(LABELS) and all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in logits):
            if self._multi_head is None:
                self._multi_head = MultiHeadLoss(head_weights_for("prior", list(out)))
            b, device = logits[0].shape[0], logits[0].device
            labels = self._target("labels", [t.shape[1] for t in logits], b, device)
            return self._multi_head(out, labels)[0]
        total: torch.Tensor | None = None
        for i, logits in enumerate(_flatten(out)):
            logits = logits.float()
            if logits.dim() == 2 and logits.shape[1] > 1:
                target = self._target(i, [logits.shape[1]], logits.shape[0], logits.device)[:, 0]
                term = nn.functional.cross_entropy(logits, target)
            else:
                term = logits.square().mean()
            total = term if total is None else total + term
        if total is None:
            raise ValueError("model output holds no tensor to take a loss of")
        return total


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so an earlier model's freed tensors do not
    hide this block's growth in RSS."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _RssPeak:
    """Peak resident-set-size increase of this process over the block (Linux only).

    Resets the kernel's high-water mark (`/proc/self/clear_refs` <- 5) on entry and reads `VmHWM`
    on exit: exact, and no sampling thread competing with the timed steps. `delta_mb` is None where
    that interface is missing.
    """

    def __init__(self) -> None:
        self.baseline: int | None = None
        self.peak: int | None = None

    @staticmethod
    def _status() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
        return out

    def __enter__(self) -> _RssPeak:
        _release_free_memory()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.baseline = self._status()["VmRSS"]
        except (OSError, KeyError, ValueError):
            self.baseline = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.baseline is not None:
            try:
                self.peak = self._status()["VmHWM"]
            except (OSError, KeyError, ValueError):
                self.peak = None

    @property
    def delta_mb(self) -> float | None:
        if self.baseline is None or self.peak is None:
            return None
        return max(0, self.peak - self.baseline) / 2**20


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile of an already sorted list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def measure_throughput(model: nn.Module, batch_size: int, image_size: ImageSize,
                       device: torch.device | str = "cpu", train: bool = False, amp: bool = True,
                       channels_last: bool = True, warmup: int = 3, iters: int = 10) -> dict[str, Any]:
    """Images/s, step time and peak memory of inference or of one training step.

    Inference runs under `torch.inference_mode()` in eval mode; a training step is forward, loss,
    backward and an AdamW step. `amp` (bf16 autocast) applies on CUDA only; `channels_last` applies
    to model and inputs. Steps are timed one by one after `warmup` untimed steps, with CUDA events
    (synchronised) on CUDA and `perf_counter` on CPU. A CUDA out-of-memory is caught and returned as
    `status: "oom"` so a sweep over batch sizes goes on. The model's weights, mode, device and memory
    format are restored afterwards (a training step changes the weights).
    """
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    use_amp = bool(amp and on_cuda)
    mods = _modalities(model)
    record: dict[str, Any] = {
        "mode": "train" if train else "infer",
        "status": "ok",
        "error": None,
        "batch_size": batch_size,
        "img_size": image_size if isinstance(image_size, int) else list(_pair(image_size)),
        "modalities": mods,
        "images_per_step": batch_size * mods,
        "samples_per_sec": None,
        "step_time_ms": None,
        "step_time_spread_ms": None,
        "step_time_std_ms": None,
        "peak_memory_mb": None,
        "memory_kind": "cuda_max_allocated" if on_cuda else "cpu_peak_rss_increase",
        "device": torch.cuda.get_device_name(device) if on_cuda else "cpu",
        "amp": "bf16" if use_amp else None,
        "channels_last": channels_last,
        "warmup": warmup,
        "iters": iters,
    }
    first = next(model.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    saved = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if train else None
    was_training = model.training
    optimizer: torch.optim.Optimizer | None = None
    try:
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        model.train(train)
        clinic, derm = _example_images(batch_size, image_size, device, channels_last)
        if on_cuda:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if use_amp
                    else contextlib.nullcontext())
        if train:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
            loss_fn = BenchLoss()

            def step() -> None:
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    loss = loss_fn(model(clinic, derm))
                loss.backward()
                optimizer.step()
        else:

            def step() -> None:
                with torch.inference_mode(), autocast:
                    model(clinic, derm)

        sampler = _RssPeak() if not on_cuda else contextlib.nullcontext()
        with sampler:
            times = _time_steps(step, warmup, iters, device)
        ordered = sorted(times)
        median = statistics.median(ordered)
        record["step_time_ms"] = median * 1e3
        record["step_time_spread_ms"] = (_quantile(ordered, 0.75) - _quantile(ordered, 0.25)) * 1e3
        record["step_time_std_ms"] = (statistics.stdev(ordered) if len(ordered) > 1 else 0.0) * 1e3
        record["samples_per_sec"] = batch_size * mods / median
        if on_cuda:
            record["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        elif isinstance(sampler, _RssPeak):
            record["peak_memory_mb"] = sampler.delta_mb
    except torch.cuda.OutOfMemoryError as err:
        record["status"] = "oom"
        record["error"] = str(err).splitlines()[0] if str(err) else "CUDA out of memory"
    finally:
        optimizer = None
        model.zero_grad(set_to_none=True)
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.to(home)
        if saved is not None:
            model.load_state_dict(saved)
        model.train(was_training)
        if on_cuda:
            torch.cuda.empty_cache()
    return record


def _time_steps(step: Callable[[], None], warmup: int, iters: int, device: torch.device) -> list[float]:
    """Seconds per step after warm-up; CUDA steps timed with events and synchronised."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) / 1e3 for start, end in events]
    times = []
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def profile_model(model: nn.Module, image_size: ImageSize, device: torch.device | str = "cpu",
                  batch_size: int = 32, amp: bool = True, channels_last: bool = True,
                  warmup: int = 3, iters: int = 10, gmacs: bool = True) -> dict[str, Any]:
    """Everything the run report's cost table needs, in one call: params, GMACs, both throughputs."""
    params = count_parameters(model)
    macs = gmacs_report(model, image_size) if gmacs else None
    kwargs = dict(batch_size=batch_size, image_size=image_size, device=device, amp=amp,
                  channels_last=channels_last, warmup=warmup, iters=iters)
    return {
        "params": params,
        "gmacs": macs["gmacs"] if macs else None,
        "gmacs_note": macs["note"] if macs else "not requested",
        "unsupported_ops": macs["unsupported_ops"] if macs else {},
        "infer": measure_throughput(model, train=False, **kwargs),
        "train": measure_throughput(model, train=True, **kwargs),
        "conventions": {"macs": MACS_CONVENTION, "images": IMAGES_CONVENTION},
    }

