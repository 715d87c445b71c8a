"""Training spec variants inside a stage: the data is rebuilt only when a variant changes it
(data.downsample), each run gets its own TensorBoard folder so curves overlay, and the first
seed's result of each experiment is kept (its model and weights) for the stage's artefacts."""

from __future__ import annotations

from nnrecipe.probes.regularize import Trained, train_one


class Trainer:
    def __init__(self, ctx, *, stage: str, steps: int, every: int):
        self.ctx, self.stage, self.steps, self.every = ctx, stage, steps, every
        self._data = {ctx.spec.data.downsample: ctx.device_data()}
        self.first_seed: dict[str, Trained] = {}  # experiment label -> its first Trained

    def data(self, spec):
        key = spec.data.downsample
        if key not in self._data:
            from nnrecipe.data import build_data

            self._data[key] = build_data(spec, base=self.ctx.base).to(self.ctx.device)
        return self._data[key]

    def train(self, spec, *, seed: int, label: str, watch_patience=None, steps=None, last_checkpoint=None,
              checkpoint_key: str = "", resume_from=None, purge_step=None, on_eval=None, keep: bool = True) -> Trained:
        """`keep=False`: do not hold on to the trained model (tune's many trials)."""
        ctx = self.ctx
        t = train_one(spec, data=self.data(spec), base=ctx.base, device=ctx.device, seed=seed, steps=steps or self.steps,
                      every=min(self.every, steps or self.steps), writer=ctx.writer(self.stage, label, purge_step=purge_step),
                      progress=ctx.progress, label=label, watch_patience=watch_patience, last_checkpoint=last_checkpoint,
                      checkpoint_key=checkpoint_key, resume_from=resume_from, on_eval=on_eval)
        if keep:
            self.first_seed.setdefault(label, t)
        return t
