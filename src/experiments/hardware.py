"""What the hardware can do, for the choices a run makes for it: the training precision.

`trainer.precision: ${auto_precision:${.accelerator}}` (conf/trainer/default.yaml) asks `choose_precision`;
any explicit `trainer.precision=<value>` replaces the interpolation and wins.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"


@dataclass(frozen=True)
class PrecisionChoice:
    """A training precision and why it was chosen (the run's summary and params say both)."""

    precision: str
    reason: str


def cpu_has_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU has bf16 arithmetic in hardware (x86: AVX512-BF16 or AMX-BF16; Arm: BF16), from
    /proc/cpuinfo's flags; None where that cannot be read (not Linux).

    Args:
        cpuinfo: the text of /proc/cpuinfo (read from the system when None).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as info:
                cpuinfo = info.read()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _cuda_bf16() -> bool | None:
    """Whether the first CUDA device computes in bf16 natively (Ampere and newer); None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def choose_precision(
    accelerator: str = "auto", cpuinfo: str | None = None, cuda_bf16=_cuda_bf16
) -> PrecisionChoice:
    """The fastest training precision that keeps accuracy on this hardware: bf16 autocast where the CPU or
    GPU has bf16 units (without them oneDNN emulates bf16 on a CPU: measured 4.2x to 15x slower than fp32 by
    `python -m benchmarks.bf16_cpu` with AVX2 only), fp16 autocast on a GPU without bf16, fp32 otherwise.

    Args:
        accelerator: `trainer.accelerator` (cpu, gpu, cuda, mps or auto: CUDA when there is one, else CPU).
        cpuinfo: /proc/cpuinfo's text, for tests (read from the system when None).
        cuda_bf16: answers whether the CUDA device has native bf16 (None: no CUDA device), for tests.
    """
    accelerator = str(accelerator).lower()
    if accelerator == "mps":
        return PrecisionChoice(
            "32-true", "Apple silicon (MPS): fp32, autocast there is not the CPU's bf16 path"
        )
    if accelerator in ("gpu", "cuda", "auto"):
        native = cuda_bf16()
        if native is not None:
            if native:
                return PrecisionChoice("bf16-mixed", "the CUDA GPU has native bf16")
            return PrecisionChoice("16-mixed", "the CUDA GPU has no native bf16: fp16 autocast")
        if accelerator != "auto":
            return PrecisionChoice(
                "32-true", f"trainer.accelerator={accelerator} but no CUDA device is visible"
            )
    native = cpu_has_bf16(cpuinfo)
    if native:
        return PrecisionChoice(
            "bf16-mixed", "the CPU has bf16 instructions (avx512_bf16/amx_bf16 or Arm bf16)"
        )
    if native is None:
        return PrecisionChoice("32-true", "the CPU's instructions could not be read: fp32, the safe choice")
    return PrecisionChoice(
        "32-true", "the CPU has no bf16 instructions (bf16 autocast would be emulated, several times slower)"
    )


def trainer_precision(trainer_cfg) -> PrecisionChoice:
    """The precision a composed `trainer` config trains in, and why: the automatic choice while
    `trainer.precision` is still `${auto_precision:...}`, else the value the user set.

    Args:
        trainer_cfg: the composed `trainer` node (an OmegaConf DictConfig).
    """
    from omegaconf import OmegaConf

    written = OmegaConf.to_container(trainer_cfg, resolve=False).get("precision")  # as the YAML wrote it
    accelerator = str(trainer_cfg.get("accelerator", AUTO))
    if "${auto_precision:" in str(written):
        return choose_precision(accelerator)
    value = str(trainer_cfg.precision)
    reason = "set explicitly (trainer.precision)"
    if value.startswith("bf16") and accelerator == "cpu" and cpu_has_bf16() is False:
        reason += (
            "; this CPU has no bf16 instructions, so training may be several times slower than "
            "trainer.precision=32-true"
        )
    return PrecisionChoice(value, reason)
