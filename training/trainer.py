"""The training loop shared by every method; the method itself is a recipe (:mod:`training.recipes`).

The :class:`Trainer` asks ``recipe_for(cfg.model.kind)`` for the model, the auxiliary networks
(optimised together with the model, saved in ``trainer_state`` for exact resume, never in the
shipped checkpoint), the loss and the end-of-training step; it owns everything else:

* **batches** (:mod:`training.batches`) from the corpus (:mod:`training.corpus`) and the frozen
  encoder's feature cache (:mod:`training.features`); the encoder is fine-tuned after
  ``train.warmup_epochs`` when that is below ``train.epochs`` (its weights then live in the model);
* **exact resume**: every ``checkpoint_every`` steps (and at the end) ``trainer_state.safetensors``
  (model, aux and optimizer tensors, RNG states) and ``trainer_state.json`` (step, epoch, position in
  the epoch, optimizer hyper-parameters) are written atomically -- no pickle anywhere.  N steps +
  kill + ``--resume`` N steps gives bit-identical weights to 2N steps straight;
* **distributed** training (:mod:`training.distributed`), only rank 0 writes;
* **artifacts**: ``log.csv``/``loss.png`` (:mod:`training.reports`), ``last.safetensors`` (fp32,
  loadable by :class:`engine.inference.Animator` at any point of the run), ``model.safetensors``
  (fp16 when ``train.save_half``), and the evaluation (:mod:`training.evaluate`).
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from engine.fileio import atomic_path, atomic_write
from training import distributed as D
from training.batches import Batcher
from training.config import Config, ConfigError, dump_config
from training.corpus import Clip, Corpus, load_corpus
from training.features import FeatureCache, clip_features_live, encoder_specs, live_features
from training.recipes.base import recipe_for
from training.reports import read_log, write_log
from training.state import optimizer_from_tensors, optimizer_to_tensors, rng_state, set_rng_state

__all__ = ["Trainer"]


class Trainer:
    """Runs one config to completion, writing into ``out``.

    ``encoder_factory(spec) -> module`` replaces the real audio encoders (tests);
    ``on_checkpoint(step)`` runs after each trainer-state save (tests use it to simulate a kill).
    """

    def __init__(self, cfg: Config, out: str | os.PathLike, resume: bool = False, corpus: Corpus | None = None,
                 encoder_factory: Callable[[dict[str, Any]], nn.Module] | None = None,
                 on_checkpoint: Callable[[int], None] | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.resume = resume
        self.on_checkpoint = on_checkpoint
        t = cfg.train
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.device = D.pick_device(t.device)
        self.dist = D.init_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.corpus = corpus if corpus is not None else load_corpus(cfg.data)
        self.train_clips = self.corpus.splits.get(cfg.data.train_split, [])
        if not self.train_clips:
            raise ConfigError(f"split {cfg.data.train_split!r} of {cfg.data.root} has no clips")
        self.recipe = recipe_for(cfg.model.kind)
        try:
            self.recipe.configure(dict(cfg.recipe))
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        self.specs = encoder_specs(cfg.model.params)
        self.cache = FeatureCache(Path(t.feature_cache) if t.feature_cache else self.out / "features",
                                  self.specs, t.pack_seconds)
        if encoder_factory is not None:
            for s in self.specs:
                self.cache.set_encoder(s, encoder_factory(s))
        self.feature_dim = sum(self.cache.dim(s) for s in self.specs)
        # The encoder becomes part of the model (and of its checkpoint) only when it will be
        # unfrozen at some point; a run that keeps it frozen ships a small checkpoint.
        self.finetune = t.warmup_epochs < t.epochs
        torch.manual_seed(t.seed)
        np.random.seed(t.seed)
        random.seed(t.seed)
        params = dict(cfg.model.params)
        params["encoders"] = self.specs
        params["feature_dim"] = self.feature_dim
        cfg.model.params = params
        self.model = self.recipe.build_model(dict(params), self.corpus.topology).to(self.device)
        self.recipe.prepare(self.model, np.stack([c.template for c in self.train_clips]))
        if t.init_checkpoint:
            self._load_initial_weights(t.init_checkpoint)
        if self.finetune:
            self.model.attach_encoders([self.cache.encoder(s) for s in self.specs])
            self.model.to(self.device)
        self.aux = self.recipe.build_aux(self.model, dict(params)).to(self.device)
        self.set_encoder_trainable(False)
        self.opt = torch.optim.Adam(list(self.model.parameters()) + list(self.aux.parameters()), lr=cfg.optim.lr,
                                    betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
        self.batcher = Batcher(self.train_clips, t, self.corpus.fps, self.dist.rank, self.dist.world,
                               needs=self.recipe.batch_needs())
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.log_rows: list[dict[str, Any]] = []

    def _load_initial_weights(self, path: str) -> None:
        """Fine-tuning: every model tensor from a checkpoint of the same kind and sizes (strict)."""
        from engine.checkpoint import load_checkpoint
        ck = load_checkpoint(path)
        if ck.kind != self.cfg.model.kind:
            raise ConfigError(f"train.init_checkpoint {path} holds a {ck.kind!r} model, this run trains "
                              f"{self.cfg.model.kind!r}")
        # plug-ins added to a trained host (Wav2Sem) may be absent from it: they start as the identity
        optional = tuple(self.model.init_optional_prefixes()) if hasattr(self.model, "init_optional_prefixes") else ()
        try:
            if optional:
                own = {k for k in self.model.state_dict() if k.startswith(optional)}
                state = {**{k: v for k, v in self.model.state_dict().items() if k in own}, **ck.state_dict}
                self.model.load_state_dict(state, strict=True)
            else:
                self.model.load_state_dict(ck.state_dict, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"train.init_checkpoint {path} does not fit this run's model "
                              f"(set [model] params to the checkpoint's: {ck.config}): {exc}") from None

    # ------------------------------------------------------------------ encoder freezing
    def _encoder_params(self) -> list[nn.Parameter]:
        enc = getattr(self.model, "encoders", None)
        return list(enc.parameters()) if enc is not None else []

    def set_encoder_trainable(self, flag: bool) -> None:
        for p in self._encoder_params():
            p.requires_grad_(flag)
        enc = getattr(self.model, "encoders", None)
        if enc is not None:
            enc.train(flag)

    def encoder_frozen(self) -> bool:
        return not self.finetune or self.epoch < self.cfg.train.warmup_epochs

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in list(self.model.parameters()) + list(self.aux.parameters()) if p.requires_grad]

    # ------------------------------------------------------------------ data
    def batches(self, epoch: int) -> list[list[int]]:
        return self.batcher.plan(epoch)

    def make_batch(self, epoch: int, idx: list[int]) -> dict[str, Tensor]:
        frozen = self.encoder_frozen()
        return self.batcher.make(epoch, idx, (lambda c: self.cache.load(c, c.num_frames)) if frozen else None)

    @torch.no_grad()
    def clip_features(self, clip: Clip) -> Tensor:
        """Whole-clip features ``(T, C)`` for evaluation: the cache while the encoder is the
        pretrained one, the model's own (fine-tuned) encoders otherwise."""
        encs = getattr(self.model, "encoders", None)
        if encs is None or self.encoder_frozen():
            return self.cache.load(clip, clip.num_frames)
        return clip_features_live(encs, clip.load_wav(), clip.num_frames)

    def eval_clips(self, split: str) -> list[Clip]:
        clips = self.corpus.splits.get(split, [])
        return clips[: self.cfg.eval.max_clips] if self.cfg.eval.max_clips else clips

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        self.model.train()
        self.aux.train()
        if self.encoder_frozen() and getattr(self.model, "encoders", None) is not None:
            self.model.encoders.eval()
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if "features" not in batch:
            batch["features"] = live_features(self.model.encoders, batch["wav"], int(batch["crop"]))
        out = self.recipe.loss(self.model, self.aux, batch, self.step)
        self.opt.zero_grad(set_to_none=True)
        out.total.backward()
        params = self.trainable()
        D.average_gradients(params, self.dist)
        if self.cfg.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        self.opt.step()
        return {"loss": float(out.total.detach()), **{k: float(v) for k, v in out.terms.items()}}

    # ------------------------------------------------------------------ persistence
    def save_state(self) -> None:
        if not self.dist.is_main:
            return
        from safetensors.torch import save_file
        self.recipe.before_checkpoint(self)   # first: the state below must hold what last.safetensors holds
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        tensors.update({f"aux.{k}": v.detach().cpu().contiguous() for k, v in self.aux.state_dict().items()})
        opt_t, opt_meta = optimizer_to_tensors(self.opt)
        rng_t, rng_meta = rng_state()
        tensors.update(opt_t)
        tensors.update(rng_t)
        meta = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "optimizer": opt_meta, "rng": rng_meta, "config": self.cfg.to_dict(),
                "log_rows": len(self.log_rows)}
        self.out.mkdir(parents=True, exist_ok=True)
        # tensors first, then the json that points at them; the step is stored in both and a
        # mismatch (killed between the two writes) is refused on resume.
        with atomic_path(self.out / "trainer_state.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"step": str(self.step)})
        with atomic_write(self.out / "trainer_state.json", "w") as fh:
            json.dump(meta, fh, indent=1)
        write_log(self.log_rows, self.out)
        self.save_checkpoint(self.out / "last.safetensors", half=False, prepare=False)

    def load_state(self) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file
        st_path = self.out / "trainer_state.safetensors"
        js_path = self.out / "trainer_state.json"
        if not st_path.is_file() or not js_path.is_file():
            raise ConfigError(f"--resume: no trainer state in {self.out} (expected trainer_state.safetensors/.json)")
        meta = json.loads(js_path.read_text())
        with safe_open(str(st_path), "pt") as fh:
            step_in_tensors = int(fh.metadata().get("step", -1))
        if step_in_tensors != meta["step"]:
            raise ConfigError(f"--resume: trainer_state files disagree (step {step_in_tensors} vs {meta['step']}); "
                              "the run was killed while saving -- delete trainer_state.json to restart from scratch")
        tensors = load_file(str(st_path))
        self.step, self.epoch, self.batch_in_epoch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        if not self.encoder_frozen():
            self.set_encoder_trainable(True)
        self.model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        self.aux.load_state_dict({k[len("aux."):]: v for k, v in tensors.items() if k.startswith("aux.")})
        optimizer_from_tensors(self.opt, tensors, meta["optimizer"])
        set_rng_state(tensors, meta["rng"])
        self.log_rows = read_log(self.out)[: meta["log_rows"]]

    def data_card(self) -> dict[str, Any]:
        card = {"dataset": self.cfg.data.kind, "root": self.cfg.data.root,
                "train_clips": len(self.train_clips), "train_subjects": self.batcher.subjects,
                "steps": self.step, "epochs": self.epoch, "config_name": self.cfg.name,
                "command": "python -m training.train --config <config.toml in this run dir>"}
        card.update({k: v for k, v in self.corpus.card.items() if isinstance(v, (str, int, float))})
        return card

    def save_checkpoint(self, path: Path, half: bool, metrics: dict | None = None, prepare: bool = True) -> None:
        """A shippable model checkpoint (the recipe first completes it: e.g. the neutral style)."""
        from engine.checkpoint import save_checkpoint
        if prepare:
            self.recipe.before_checkpoint(self)
        save_checkpoint(path, self.model, config=self.model.checkpoint_config(), topology=self.corpus.topology,
                        encoder=self.specs[0], fps=self.corpus.fps, data_card=self.data_card(),
                        metrics=metrics, half=half)

    # ------------------------------------------------------------------ main loop
    def total_steps(self) -> int:
        total = len(self.batches(0)) * self.cfg.train.epochs
        return min(total, self.cfg.train.max_steps) if self.cfg.train.max_steps else total

    def fit(self) -> None:
        t = self.cfg.train
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.out / "config.toml", "w") as fh:
                fh.write(dump_config(self.cfg))
        if self.resume:
            self.load_state()
        if self.dist.is_main:   # features for every clip the run touches (train + eval), once
            self.cache.ensure(list(self.train_clips) + [c for s in self.cfg.eval.splits for c in self.eval_clips(s)])
        D.barrier(self.dist)
        total = self.total_steps()
        bar = self._progress_bar(total)
        t0 = time.time()
        acc: dict[str, list[float]] = {}
        plan_epoch, plan = -1, []
        while self.step < total and self.epoch < t.epochs:
            if plan_epoch != self.epoch:
                if not self.encoder_frozen():
                    self.set_encoder_trainable(True)
                plan_epoch, plan = self.epoch, self.batches(self.epoch)
            logs = self.train_step(self.make_batch(self.epoch, plan[self.batch_in_epoch]))
            self.step += 1
            self.batch_in_epoch += 1
            if self.batch_in_epoch >= len(plan):
                self.epoch += 1
                self.batch_in_epoch = 0
            for k, v in logs.items():
                acc.setdefault(k, []).append(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", epoch=plan_epoch, refresh=False)  # honour mininterval
            if self.step % t.log_every == 0 or self.step == total:
                self.log_rows.append({"step": self.step, "epoch": plan_epoch, "time_s": round(time.time() - t0, 3),
                                      **{k: float(np.mean(v)) for k, v in acc.items()}})
                acc = {}
            if self.step % t.checkpoint_every == 0 or self.step == total:
                self.save_state()
                D.barrier(self.dist)
                if self.on_checkpoint is not None:
                    self.on_checkpoint(self.step)
        if bar is not None:
            bar.close()
        D.barrier(self.dist)
        if self.dist.world > 1:
            diff = D.max_weight_difference(list(self.model.parameters()) + list(self.aux.parameters()), self.dist)
            if self.dist.is_main:
                with atomic_write(self.out / "ddp_check.json", "w") as fh:
                    json.dump({"world": self.dist.world, "max_weight_diff": diff}, fh)

    def _progress_bar(self, total: int) -> Any:
        if not self.dist.is_main:
            return None
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover
            return None
        return tqdm(total=total, initial=self.step, desc=self.cfg.name, unit="step", file=sys.stderr,
                    mininterval=0.5 if sys.stderr.isatty() else 10.0)

    # ------------------------------------------------------------------ after training
    def finish(self, evaluate: bool = True) -> dict[str, Any]:
        """The recipe's end step, evaluation, final checkpoints (rank 0)."""
        if not self.dist.is_main:
            return {}
        self.recipe.finish(self)
        results: dict[str, Any] = {}
        if evaluate:
            from training.evaluate import evaluate_trainer
            results = evaluate_trainer(self)
        self.save_checkpoint(self.out / "last.safetensors", half=False, metrics=results.get("summary"))
        self.save_checkpoint(self.out / "model.safetensors", half=self.cfg.train.save_half,
                             metrics=results.get("summary"))
        return results
