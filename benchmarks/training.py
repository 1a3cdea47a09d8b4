"""Training: the share of a step spent waiting for data, bf16-mixed + channels_last against fp32 NCHW
(speed and validation AUC), and the Lightning + MLflow loop against a plain PyTorch loop.

Everything runs the real `DeepfakeDataModule` (through `BenchDataModule`, which only adds timers and an
NCHW switch) and the real `DeepfakeDetector` built from the composed Hydra configs.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from benchmarks.common import (
    Measurement,
    Plan,
    auc_standard_error,
    compose,
    median,
    ratio,
    release,
    rnd,
)
from src.data.datamodule import DeepfakeDataModule
from src.experiments.wiring import build_datamodule

BENCH_DATAMODULE = "data._target_=benchmarks.training.BenchDataModule"


class TimedIterable:
    """A DataLoader whose every `iter()` and `next()` is timed: (start, end) pairs in `spans`."""

    def __init__(self, loader, spans: list):
        self.loader, self.spans = loader, spans

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        start = time.perf_counter()
        iterator = iter(self.loader)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                self.spans.append((start, time.perf_counter()))
                return
            self.spans.append((start, time.perf_counter()))
            yield batch
            start = time.perf_counter()


class BenchDataModule(DeepfakeDataModule):
    """The framework's DataModule with timed train loading and batch preparation.

    `nchw = True` makes the prepared batches contiguous NCHW (the fp32 NCHW baseline); the framework
    delivers them channels_last-strided.
    """

    nchw = False

    def reset_timers(self) -> None:
        self.load_spans: list = []
        self.prep_spans: list = []

    def train_dataloader(self):
        if not hasattr(self, "load_spans"):
            self.reset_timers()
        return TimedIterable(super().train_dataloader(), self.load_spans)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        start = time.perf_counter()
        x, labels, videos = super().on_after_batch_transfer(batch, dataloader_idx)
        if self.nchw:
            x = x.contiguous()
        if hasattr(self, "prep_spans"):
            self.prep_spans.append((start, time.perf_counter()))
        return x, labels, videos


class StepTimer(Callback):
    """Start and end of every training batch, start of fit, and the val AUC after each epoch."""

    def __init__(self):
        self.starts, self.ends, self.val_auc, self.samples, self.epoch_starts = [], [], [], [], []
        self.cpu_ends, self.val_loss, self.epoch_cpu_starts = [], [], []
        self.epoch_seconds, self.epoch_cpu_seconds = [], []
        self.fit_start = self.train_start = None

    def on_fit_start(self, trainer, pl_module):
        self.fit_start = time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        self.train_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_starts.append(time.perf_counter())
        self.epoch_cpu_starts.append(time.process_time())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())
        self.samples.append(len(batch[1]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_seconds.append(time.perf_counter() - self.epoch_starts[-1])
        self.epoch_cpu_seconds.append(time.process_time() - self.epoch_cpu_starts[-1])
        metrics = trainer.callback_metrics
        if "val/video_auc" in metrics:
            self.val_auc.append(float(metrics["val/video_auc"]))
            self.val_loss.append(float(metrics.get("val/video_loss", float("nan"))))


def _inside(spans, lo: float, hi: float) -> float:
    return sum(b - a for a, b in spans if a >= lo and b <= hi)


def summarize(starts, ends, samples, load_spans, prep_spans, setup_start: float, cpu_ends: list) -> dict:
    """Steady-state numbers of one run; step 0 (worker start-up, first-call costs) is left out.

    `cpu_*` is the CPU time of this process (all its threads, not the DataLoader workers): less disturbed
    than wall time by other jobs on the machine.
    """
    lo, hi = ends[0], ends[-1]
    window = hi - lo
    steps = len(starts) - 1
    load, prep = _inside(load_spans, lo, hi), _inside(prep_spans, lo, hi)
    wait = load + prep
    gaps = sum(starts[i] - ends[i - 1] for i in range(1, len(starts)))
    computes = [ends[i] - starts[i] for i in range(1, len(starts))]
    return {
        "steps": steps,
        "window_s": window,
        "seconds_per_step": window / steps,
        "cpu_seconds_per_step": (cpu_ends[-1] - cpu_ends[0]) / steps,
        "median_step_s": median(e - s for s, e in zip(starts[1:], ends[1:], strict=True)),
        "cycles_s": [ends[i] - ends[i - 1] for i in range(1, len(ends))],  # step + everything between steps
        "samples_per_s": sum(samples[1:]) / window,
        "data_wait_s": wait,
        "loader_next_s": load,
        "batch_prep_s": prep,
        "between_steps_s": gaps,
        "compute_s": sum(computes),
        "startup_s": ends[0] - setup_start,  # to the end of step 0: set-up, worker start, first step
        "end_to_end_s": hi - setup_start,
    }


# -- building blocks ---------------------------------------------------------------------------------
def configure(overrides: list[str], model: str, extra: tuple[str, ...] = ()):
    return compose([*overrides, BENCH_DATAMODULE, f"model={model}", *extra])


def prepared_datamodule(cfg) -> BenchDataModule:
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return dm


class MlflowStore:
    """A temporary sqlite MLflow store, created before any timing (the schema migration takes seconds)."""

    experiment = "bench"

    def __init__(self, folder: Path):
        from src.experiments.tracking import client, experiment_id

        folder.mkdir(parents=True, exist_ok=True)
        self.uri = f"sqlite:///{folder / 'mlflow.db'}"
        start = time.perf_counter()
        experiment_id(client(self.uri), self.uri, self.experiment)
        self.creation_s = time.perf_counter() - start

    def logger(self, cfg):
        """`cfg.logger` (the MLflow logger train.py uses) pointed at this store."""
        from omegaconf import OmegaConf

        return OmegaConf.merge(cfg.logger, {"experiment_name": self.experiment, "tracking_uri": self.uri})


def lightning_run(
    cfg,
    dm: BenchDataModule,
    steps: int,
    store: MlflowStore | None,
    epochs: int | None = None,
    validate: bool = False,
) -> tuple[dict, StepTimer, object]:
    """Fit the real module under a Trainer shaped by cfg.trainer: `steps` steps (+1 warm-up), or `epochs`."""
    from src.experiments.tracking import Run, flat_params

    dm.reset_timers()
    setup_start = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    module = instantiate(cfg.model)
    run = Run.start(store.logger(cfg) if store is not None else None)  # no store: a run that records nothing
    if store is not None:
        run.log_params(flat_params(cfg))  # as train.py does
    timer = StepTimer()
    t = cfg.trainer
    with run.state():
        trainer = L.Trainer(
            accelerator=t.accelerator,
            devices=1,
            precision=t.precision,
            logger=run.logger or False,
            callbacks=[timer],
            max_steps=-1 if epochs else steps + 1,
            max_epochs=epochs or -1,
            log_every_n_steps=t.log_every_n_steps,
            limit_val_batches=None if validate else 0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(dm.cache.cache_dir.parent),
        )
        trainer.fit(module, datamodule=dm)
    result = summarize(
        timer.starts, timer.ends, timer.samples, dm.load_spans, dm.prep_spans, setup_start, timer.cpu_ends
    )
    del trainer
    release()
    return result, timer, module


def plain_run(cfg, dm: BenchDataModule, steps: int) -> dict:
    """The same steps as `lightning_run`, in a plain PyTorch loop: same module, data, optimizer, precision."""
    dm.reset_timers()
    setup_start = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    module = instantiate(cfg.model)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    bf16 = cfg.trainer.precision == "bf16-mixed"
    loader = dm.train_dataloader()
    module.train()
    starts, ends, samples, cpu_ends = [], [], [], []
    iterator = iter(loader)
    while len(ends) < steps + 1:
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            continue
        x, labels, _ = dm.on_after_batch_transfer(batch, 0)
        starts.append(time.perf_counter())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.loss(module(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ends.append(time.perf_counter())
        cpu_ends.append(time.process_time())
        samples.append(len(labels))
    del iterator, loader
    result = summarize(starts, ends, samples, dm.load_spans, dm.prep_spans, setup_start, cpu_ends)
    release()
    return result


def _agg(runs: list[dict]) -> dict:
    window = sum(r["window_s"] for r in runs)
    steps = sum(r["steps"] for r in runs)
    return {
        "seconds_per_step": window / steps,
        "cpu_seconds_per_step": sum(r["cpu_seconds_per_step"] * r["steps"] for r in runs) / steps,
        "median_step_s": median(r["median_step_s"] for r in runs),
        "median_cycle_s": median(c for r in runs for c in r["cycles_s"]),
        "samples_per_s": sum(r["samples_per_s"] * r["window_s"] for r in runs) / window,
        "data_wait_share": sum(r["data_wait_s"] for r in runs) / window,
        "loader_next_share": sum(r["loader_next_s"] for r in runs) / window,
        "batch_prep_share": sum(r["batch_prep_s"] for r in runs) / window,
        "between_steps_share": sum(r["between_steps_s"] for r in runs) / window,
        "startup_s": median(r["startup_s"] for r in runs),
        "end_to_end_s": sum(r["end_to_end_s"] for r in runs) / len(runs),
    }


def _rounded(d: dict) -> dict:
    return {
        k: rnd(v, 4) if isinstance(v, float) else [rnd(x, 4) for x in v] if isinstance(v, list) else v
        for k, v in d.items()
    }


# -- 3 and 5: data wait share, Lightning + MLflow vs plain loop ---------------------------------------
def bench_loop(plan: Plan, work: Path, overrides: list[str]) -> list[Measurement]:
    store = MlflowStore(work / "scratch" / "mlflow-loop")
    cfg = configure(overrides, "mesonet")
    dm = prepared_datamodule(cfg)
    runs = {"lightning": [], "plain": []}
    order = []
    for r in range(plan.overhead_rounds):
        order += ["lightning", "plain"] if r % 2 == 0 else ["plain", "lightning"]
    for kind in order:
        if kind == "lightning":
            runs[kind].append(lightning_run(cfg, dm, plan.meso_steps, store)[0])
        else:
            runs[kind].append(plain_run(cfg, dm, plan.meso_steps))
    lit, plain = _agg(runs["lightning"]), _agg(runs["plain"])

    lstm_cfg = configure(overrides, "resnet_lstm", ("model.net.freeze_backbone=true",))
    lstm_dm = prepared_datamodule(lstm_cfg)
    lstm = _agg([lightning_run(lstm_cfg, lstm_dm, plan.lstm_steps, store)[0]])

    hp, t = dm.loaders, cfg.trainer
    setup = (
        f"real DataModule + module under a Lightning Trainer with MLflowLogger, precision={t.precision}, "
        f"num_workers={hp.num_workers}, pin_memory={torch.cuda.is_available()}; wait = time blocked in the "
        "DataLoader's next() + on_after_batch_transfer (uint8->float, normalise), steady state after step 0"
    )
    epoch_steps = -(-len(dm.train_dataset()) // dm.batch_size)
    rows = [
        Measurement(
            "data wait share of a training step: MesoInception4, batch 32",
            rnd(100 * lit["data_wait_share"], 2),
            "%",
            None,
            rnd(lit["data_wait_share"], 4),
            "< 5%",
            lit["data_wait_share"] < 0.05,
            f"{setup}; {plan.meso_steps} steps x {plan.overhead_rounds} run(s), an epoch is {epoch_steps} steps; "
            f"next() {100 * lit['loader_next_share']:.1f}% + batch prep {100 * lit['batch_prep_share']:.1f}%; "
            f"all time between steps (incl. Lightning bookkeeping, logging) is "
            f"{100 * lit['between_steps_share']:.1f}%; {lit['seconds_per_step']:.2f} s/step",
            "3 data wait",
            {"lightning": _rounded(lit), "runs": [_rounded(r) for r in runs["lightning"]]},
        ),
        Measurement(
            "data wait share of a training step: ResNetLSTM (frozen backbone), batch 4x20 frames",
            rnd(100 * lstm["data_wait_share"], 2),
            "%",
            None,
            rnd(lstm["data_wait_share"], 4),
            "< 5%",
            lstm["data_wait_share"] < 0.05,
            f"{setup}; model.net.freeze_backbone=true (backbone under no_grad); {plan.lstm_steps} steps; next() "
            f"{100 * lstm['loader_next_share']:.1f}% + batch prep {100 * lstm['batch_prep_share']:.1f}%; all time between "
            f"steps is {100 * lstm['between_steps_share']:.1f}%; {lstm['seconds_per_step']:.2f} s/step",
            "3 data wait",
            {"lightning": _rounded(lstm)},
        ),
    ]
    cycle_ratio = ratio(lit["median_cycle_s"], plain["median_cycle_s"])
    mean_ratio = ratio(lit["seconds_per_step"], plain["seconds_per_step"])
    cpu_ratio = ratio(lit["cpu_seconds_per_step"], plain["cpu_seconds_per_step"])
    round_ratios = [
        ratio(a["seconds_per_step"], b["seconds_per_step"])
        for a, b in zip(runs["lightning"], runs["plain"], strict=True)
    ]
    e2e_ratio = ratio(lit["end_to_end_s"], plain["end_to_end_s"])
    rows += [
        Measurement(
            "Lightning + MLflow loop vs plain PyTorch loop: median time per step",
            rnd(lit["median_cycle_s"], 4),
            "s/step",
            rnd(plain["median_cycle_s"], 4),
            rnd(cycle_ratio, 4),
            "< 1.05x (overhead < 5%)",
            cycle_ratio < 1.05,
            f"MesoInception4, batch 32, {t.precision}, same DataModule/loader/optimizer, Lightning with MLFlowLogger "
            f"(temp sqlite store, log_every_n_steps={t.log_every_n_steps}) and train.py's params; "
            f"{plan.overhead_rounds} round(s) of {plan.meso_steps}+1 steps in ABBA order; a step = end of one "
            f"optimizer step to the end of the next (data, bookkeeping, logging included); the median, because "
            f"other jobs' bursts stall 2-thread steps for up to ~3x; mean-based ratio {mean_ratio:.3f} (per round "
            f"{[rnd(x, 2) for x in round_ratios]}), main-process CPU time ratio {cpu_ratio:.3f}; MLflow store "
            f"creation (not counted, once): {store.creation_s:.1f} s",
            "5 loop overhead",
            {
                "lightning": _rounded(lit),
                "plain": _rounded(plain),
                "runs": {k: [_rounded(r) for r in v] for k, v in runs.items()},
            },
        ),
        Measurement(
            f"Lightning + MLflow loop vs plain PyTorch loop: end to end, {plan.meso_steps}+1 steps incl. start-up",
            rnd(lit["end_to_end_s"], 3),
            "s",
            rnd(plain["end_to_end_s"], 3),
            rnd(e2e_ratio, 4),
            "< 1.05x (overhead < 5%)",
            e2e_ratio < 1.05,
            f"start-up to the end of step 0: {lit['startup_s']:.2f} s (Lightning: seed, module, MLflow run + "
            f"params, Trainer, fit set-up, workers) vs {plain['startup_s']:.2f} s (plain); a fixed cost that a "
            "real training run amortises over many steps",
            "5 loop overhead",
        ),
    ]
    del dm, lstm_dm
    release()
    return rows


# -- 4: bf16-mixed + channels_last vs fp32 NCHW --------------------------------------------------------
VARIANTS = {  # name: (autocast bf16, model.channels_last, make the batch contiguous NCHW)
    "bf16-mixed + channels_last (default)": (True, True, False),
    "fp32 NCHW": (False, False, True),
    "fp32 + channels_last": (False, True, False),
    "fp32, model.channels_last=false, batch as delivered": (False, False, False),
}


def _step(module, optimizer, x, labels, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = module.loss(module(x), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def step_throughput(
    overrides: list[str], model: str, extra: tuple[str, ...], variants: list[str], rounds: int
) -> dict:
    """Samples/s of training steps of each variant on the same real batches, variants interleaved per step."""
    cfg = configure(overrides, model, extra)
    dm = prepared_datamodule(cfg)
    loader = dm.train_dataloader()
    batches = []
    while len(batches) < rounds + 1:  # full-size batches only, over as many epochs as it takes
        for batch in loader:
            if len(batch[1]) == dm.batch_size and len(batches) < rounds + 1:
                batches.append(dm.on_after_batch_transfer(batch, 0))
    del loader
    release()
    setups = {}
    for name in variants:
        bf16, channels_last, nchw = VARIANTS[name]
        torch.manual_seed(0)
        module = instantiate(
            compose(
                [*overrides, f"model={model}", *extra, f"model.channels_last={str(channels_last).lower()}"]
            ).model
        )
        module.train()
        optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-4)
        setups[name] = (module, optimizer, bf16, nchw)
    times = {name: [] for name in variants}
    for r in range(len(batches)):
        x, labels, _ = batches[r]
        for name in variants if r % 2 == 0 else variants[::-1]:
            module, optimizer, bf16, nchw = setups[name]
            times[name].append(_step(module, optimizer, x.contiguous() if nchw else x, labels, bf16))
    batch = len(batches[0][1])
    frames = batch * (batches[0][0].shape[1] if batches[0][0].dim() == 5 else 1)
    # step 0 of each variant is a warm-up (oneDNN primitive creation)
    rates = {name: batch * (len(ts) - 1) / sum(ts[1:]) for name, ts in times.items()}
    del setups
    release()
    return {"rates": rates, "times": times, "batch": batch, "frames_per_batch": frames}


def train_auc(overrides: list[str], epochs: int, variant: str) -> dict:
    bf16, channels_last, nchw = VARIANTS[variant]
    precision = "bf16-mixed" if bf16 else "32-true"
    cfg = configure(
        overrides,
        "mesonet",
        (
            "weights=scratch",
            f"trainer.precision={precision}",
            f"model.channels_last={str(channels_last).lower()}",
        ),
    )
    dm = prepared_datamodule(cfg)
    dm.nchw = nchw
    start = time.perf_counter()
    _, timer, _ = lightning_run(cfg, dm, 0, None, epochs=epochs, validate=True)
    wall = time.perf_counter() - start
    val = dm.splits["val"]
    n_fake = sum(r.label for r in val)
    step_s = sum(e - s for s, e in zip(timer.starts, timer.ends, strict=True))
    result = {
        "val_video_auc": timer.val_auc,
        "val_video_loss": timer.val_loss,
        "n_val_fake": n_fake,
        "n_val_real": len(val) - n_fake,
        "fit_wall_s": wall,
        "train_samples_per_s": sum(timer.samples) / step_s,
        "epochs": epochs,
    }
    del dm
    release()
    return result


def bench_precision(plan: Plan, overrides: list[str]) -> list[Measurement]:
    base, fp32 = "bf16-mixed + channels_last (default)", "fp32 NCHW"
    meso = step_throughput(overrides, "mesonet", (), list(VARIANTS), plan.meso_throughput_rounds)
    lstm = step_throughput(
        overrides,
        "resnet_lstm",
        ("model.net.freeze_backbone=true",),
        [base, fp32],
        plan.lstm_throughput_rounds,
    )
    rows = []
    for label, res, rounds in (
        ("MesoInception4, batch 32", meso, plan.meso_throughput_rounds),
        ("ResNetLSTM (frozen backbone), batch 4x20 frames", lstm, plan.lstm_throughput_rounds),
    ):
        rates = res["rates"]
        others = "; ".join(
            f"{name}: {rate:.2f} samples/s" for name, rate in rates.items() if name not in (base, fp32)
        )
        rows.append(
            Measurement.at_least(
                f"training throughput bf16-mixed + channels_last vs fp32 NCHW: {label}",
                rates[base],
                rates[fp32],
                "samples/s",
                2,
                f"optimizer steps on the same {rounds} real batches (+1 warm-up), variants interleaved per step"
                + (f"; {others}" if others else ""),
                "4 precision",
                {"step_seconds": {k: [rnd(t, 4) for t in v] for k, v in res["times"].items()}},
            )
        )

    fits = {name: train_auc(overrides, plan.auc_epochs, name) for name in (base, fp32)}
    a, b = fits[base]["val_video_auc"][-1], fits[fp32]["val_video_auc"][-1]
    n_pos, n_neg = fits[base]["n_val_fake"], fits[base]["n_val_real"]
    se = auc_standard_error((a + b) / 2, n_pos, n_neg) if n_pos and n_neg else float("nan")
    near_chance = (
        (
            " (both near chance after this short training: the check shows the two precisions do not "
            "diverge, not that either has learned)"
        )
        if max(abs(a - 0.5), abs(b - 0.5)) < 2 * se
        else ""
    )
    rows.append(
        Measurement(
            f"val video AUC after {plan.auc_epochs} epoch(s) from scratch: bf16-mixed + channels_last vs fp32 NCHW",
            rnd(a, 4),
            "AUC",
            rnd(b, 4),
            rnd(ratio(a, b), 4),
            f"|diff| <= 2 SE (SE {se:.3f})",
            abs(a - b) <= 2 * se,
            f"MesoInception4, weights=scratch, seed {compose([]).seed}, same data and split; val set {n_pos} fake + "
            f"{n_neg} real videos, SE by Hanley-McNeil; per-epoch AUC {[rnd(x, 3) for x in fits[base]['val_video_auc']]} "
            f"vs {[rnd(x, 3) for x in fits[fp32]['val_video_auc']]}, val video loss "
            f"{[rnd(x, 4) for x in fits[base]['val_video_loss']]} vs {[rnd(x, 4) for x in fits[fp32]['val_video_loss']]}"
            f"{near_chance}; fit wall {fits[base]['fit_wall_s']:.0f} s vs "
            f"{fits[fp32]['fit_wall_s']:.0f} s, train {fits[base]['train_samples_per_s']:.1f} vs "
            f"{fits[fp32]['train_samples_per_s']:.1f} samples/s (Lightning, incl. epoch-boundary waits)",
            "4 precision",
            {k: _rounded(v) for k, v in fits.items()},
        )
    )
    return rows
