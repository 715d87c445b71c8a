"""Stage 2, "set up the end-to-end training/evaluation skeleton + get dumb baselines".

run() reads top to bottom: experiments measure (probes), rules judge (checks), pictures
and summary.json record. Augmentation is always off here. summary.json's `baselines`
is what the overfit and regularize stages compare against.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from nnrecipe import pictures
from nnrecipe.checks.model_checks import (batch_independence, eval_deterministic, gradients_flow, init_well,
                                          loss_at_init, output_form, reproducible)
from nnrecipe.checks.sequence_checks import causal_dependency, padding_invariance
from nnrecipe.checks.training_checks import dumb_baselines, human_baseline, input_independent, loss_decreases, overfit_one_batch
from nnrecipe.data import build_data
from nnrecipe.engine import Engine
from nnrecipe.losses import loss_name, make_loss
from nnrecipe.models import BUILTIN_ARCHS, larger_model_spec, prepare_model
from nnrecipe.optim import make_optimizer
from nnrecipe.probes.measurements import BaselineMeasurements
from nnrecipe.probes.model_probes import (InputCapture, batch_dependency, dead_units, eval_twice, gradient_step,
                                          measure_init, overfit_batch)
from nnrecipe.probes.sequence_probes import unigram_scores
from nnrecipe.probes.training import ZeroInput, data_fingerprint, train_experiment
from nnrecipe.runtime import seed_everything
from nnrecipe.spec_sections import LinearModel
from nnrecipe.stages import sequence as sq
from nnrecipe.stages.base import FigureSaver, StageContext, StageResult, with_artifacts

STAGE = "baseline"
CHECKS = (reproducible, loss_at_init, init_well, output_form, dumb_baselines, input_independent, overfit_one_batch,
          loss_decreases, gradients_flow, batch_independence, eval_deterministic, human_baseline)
SEQUENCE_CHECKS = (causal_dependency, padding_invariance)  # language models only
DYNAMICS_EXAMPLES = 16  # fixed val examples whose predictions are drawn over training
VAL_SCORES = "val_scores.npz"  # per-example val scores of every baseline experiment


def run(spec, ctx: StageContext) -> StageResult:
    cfg = spec.stages.baseline
    base, device = ctx.base, ctx.device
    data = ctx.device_data()
    loss_fn = make_loss(spec, base=base)
    lname = loss_name(spec)
    m = BaselineMeasurements(task=data.task, device_type=device.type)
    engine = Engine.for_spec(spec.train, device=device, task=data.task, log_every=spec.train.log_every)

    def fresh_model(model_spec=None):
        seed_everything(spec.seed, deterministic=spec.train.deterministic)  # every experiment starts from the same seed
        return prepare_model(spec, data, base=base, model_spec=model_spec).to(device)

    # 1. reproducible: data and model built afresh from the spec, twice, as two processes would.
    m.reproducible = tuple(_short_run(spec, ctx, loss_fn) for _ in range(2))

    # 2. the untrained model: loss at init, init well, output form, one-batch wiring.
    model = fresh_model()
    builtin_init = spec.model.arch in BUILTIN_ARCHS and spec.model.init_final_bias
    m.init = measure_init(model, data, loss_name=lname, builtin_bias_init=builtin_init, predict=engine.predict)
    xv, yv = (t.to(device) for t in _first(data.val, 512))  # lazy splits live on the host
    small = xv[: min(8, len(xv))]
    m.dependency_rows = sorted({0, len(small) // 2, len(small) - 1})
    lm = data.task == "language-model"
    if lm:
        sq.measure(m, model, data, xv, yv, loss_fn, cfg)  # causal-dependency, padding, batch-independence
    else:
        m.dependency = batch_dependency(model, small, m.dependency_rows)
        m.dependency_skip = "" if m.dependency is not None else f"inputs are {str(xv.dtype).removeprefix('torch.')}, not differentiable"
    m.eval_diff, m.eval_scale = eval_twice(model, xv[:64])
    xt, yt = (t.to(device) for t in _first(data.train, spec.data.batch_size))
    probe = copy.deepcopy(model)
    m.grad = gradient_step(probe, xt, yt, loss_fn, make_optimizer(spec.optim, probe.parameters()))
    m.grad.dead = dead_units(model, xv)

    # 3. training experiments, one TensorBoard run each so their curves overlay.
    steps, every = cfg.steps, min(cfg.eval_every, cfg.steps)
    dyn_x, dyn_y = xv[:DYNAMICS_EXAMPLES], yv[:DYNAMICS_EXAMPLES]
    dynamics: list[tuple[int, np.ndarray]] = []
    writer = ctx.writer(STAGE, "model")

    def record_dynamics(step, net, result=None):
        if lm:  # prediction dynamics for text: a sample from the fixed prompt at every evaluation
            dynamics.append((step, sq.sample(net, data, spec, device, writer, step)))
            return
        pred = _predict(net, dyn_x, data.task, lname)
        dynamics.append((step, pred))
        if data.task == "classification":
            writer.add_image("prediction_dynamics", pictures.matrix_image(pred, dyn_y.cpu().numpy()), step)

    model = fresh_model()
    capture = InputCapture(model, loss_fn)
    record_dynamics(0, model)
    m.model = train_experiment("model", spec=spec, data=data, model=model, loss_fn=capture.loss_fn, device=device,
                               steps=steps, base=base, writer=writer, progress=ctx.progress, on_eval=record_dynamics,
                               eval_every=every, keep_model=True)
    capture.remove()
    m.zero_input = train_experiment("zero-input", spec=spec, data=data, model=ZeroInput(fresh_model()), loss_fn=loss_fn,
                                    device=device, steps=steps, base=base, writer=ctx.writer(STAGE, "zero-input"),
                                    progress=ctx.progress, eval_every=every)
    bigger = larger_model_spec(spec)
    if bigger is not None:
        m.larger = train_experiment("larger", spec=spec, data=data, model=fresh_model(bigger), loss_fn=loss_fn,
                                    device=device, steps=steps, base=base, writer=ctx.writer(STAGE, "larger"),
                                    progress=ctx.progress, eval_every=every)
    else:
        m.larger_skip = ("set stages.baseline.larger_model_args for your model" if spec.model.arch == "python"
                         else f"no wider variant of {spec.model.arch}")
    # The linear baseline; for a language model its analogue, a bigram table (the next token
    # from the current one alone).
    linear = sq.bigram(spec, data).to(device) if lm else fresh_model(LinearModel(arch="linear", init_final_bias=True))
    m.linear = train_experiment("bigram" if lm else "linear", spec=spec, data=data, model=linear, loss_fn=loss_fn,
                                device=device, steps=steps, base=base, writer=ctx.writer(STAGE, "linear"),
                                progress=ctx.progress, eval_every=every)
    m.dumb_name, m.dumb_scores = _dumb_predictor(data)

    # 4. overfit one batch: a few examples covering as many classes as possible.
    xo, yo = (t.to(device) for t in _overfit_batch(data, cfg.overfit_examples))
    target = cfg.overfit_target * (float(yo.float().var(dim=0, unbiased=False).mean()) if data.task == "regression" else 1.0)
    m.overfit = overfit_batch(fresh_model(), xo, yo, loss_fn, steps=cfg.overfit_steps, lr=cfg.overfit_lr, target=target)

    verdicts = {v.check: v for v in (check(m, cfg) for check in CHECKS + (SEQUENCE_CHECKS if lm else ()))}

    # 5. pictures and the summary that later stages read.
    if lm:
        arts = sq.pictures(ctx, STAGE, data, m, capture, dynamics, xo, yo)
    else:
        arts = _pictures(ctx, data, m, capture, dynamics, dyn_y, xo, yo, lname)
    final = [with_artifacts(v, *arts.get(v.check, [])) for v in verdicts.values()]
    # Per-example val scores, so later stages compare with the baselines pairwise (same examples).
    scores = {e.name: e.val_scores for e in (m.model, m.zero_input, m.linear, m.larger) if e is not None}
    ctx.run.write_arrays(STAGE, VAL_SCORES, {**scores, m.dumb_name: m.dumb_scores})
    return StageResult(STAGE, final, _summary(spec, data, m, lname))


def _pictures(ctx: StageContext, data, m: BaselineMeasurements, capture, dynamics, dyn_y, xo, yo, lname) -> dict[str, list[str]]:
    """Draw every picture (PNG + TensorBoard image); return the artifacts of each check."""
    kind = data.kind
    save = FigureSaver(ctx, STAGE)

    if capture.x is not None:
        shown = min(len(capture.x), 32)
        rows = [(f"batch[{r}:]", [(capture.x[i], f"y={_label(data, capture.y[i])}") for i in range(r, min(shown, r + 8))])
                for r in range(0, shown, 8)]
        scale = None
        if kind == "tabular" and hasattr(data.train, "x"):
            x = data.train.x.float()
            scale = (x.mean(0).flatten().cpu().numpy(), x.std(0).flatten().cpu().numpy())
        save(pictures.example_grid(rows, kind, title="the exact tensor entering model(x) in the first training step", scale=scale),
             "model_input", "dumb-baselines", "input-independent")
    save(pictures.prediction_strip([s for s, _ in dynamics], [q for _, q in dynamics], dyn_y.cpu().numpy(), task=data.task),
         "prediction_dynamics", "loss-decreases")
    series = {e.name: (np.arange(1, len(e.history.losses) + 1), e.history.losses.numpy())
              for e in (m.model, m.zero_input, m.larger, m.linear) if e is not None}
    positive = all((v[1] > 0).all() for v in series.values())
    save(pictures.curves(series, title="training loss of each baseline experiment", ylabel="loss", logy=bool(positive)),
         "curves", "loss-decreases", "input-independent", "dumb-baselines")
    save(pictures.hbars(dict(zip(m.grad.names, m.grad.grad_norm)), xlabel="gradient L2 norm",
                        title="gradient norm per parameter after one batch (red: none or zero)"),
         "gradient_norms", "gradients-flow")
    o = m.overfit
    o_rows = [("batch", [(xo[i].cpu(), f"y={_label(data, yo[i])} ŷ={_prediction_text(data, o.outputs[i], lname)}")
                         for i in range(len(xo))])]
    save(pictures.example_grid(o_rows, kind, title=f"overfit one batch: labels vs predictions after {o.steps_run} steps"),
         "overfit_one_batch", "overfit-one-batch")
    return save.arts


# ----------------------------------------------------------------------------- helpers


def _short_run(spec, ctx: StageContext, loss_fn) -> np.ndarray:
    """Losses of a short run built from nothing but the spec (fresh data, fresh model)."""
    seed_everything(spec.seed, deterministic=spec.train.deterministic)
    data = build_data(spec, base=ctx.base).to(ctx.device)
    model = prepare_model(spec, data, base=ctx.base).to(ctx.device)
    engine = Engine.for_spec(spec.train, device=ctx.device, task=data.task,
                    log_every=spec.stages.baseline.reproducible_steps)
    steps = spec.stages.baseline.reproducible_steps
    h = engine.train(model=model, train=data.train, val=None, loss_fn=loss_fn,
                     optimizer=make_optimizer(spec.optim, model.parameters()), steps=steps,
                     batch_size=spec.data.batch_size, seed=spec.seed, label="reproducible")
    return h.losses.double().numpy()


def _first(split, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n examples of a split (a fixed batch), on the split's device."""
    xs, ys, got = [], [], 0
    for x, y in split.iterate(min(n, 512)):
        xs.append(x)
        ys.append(y)
        got += len(x)
        if got >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def _overfit_batch(data, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k train examples, round-robin over the classes so the batch is not one label."""
    y = data.targets("train")
    if data.task == "classification":
        by_class = [torch.nonzero(y == c).flatten().tolist() for c in range(data.num_outputs)]
        idx, r = [], 0
        while len(idx) < min(k, len(y)):
            for lst in by_class:
                if r < len(lst) and len(idx) < k:
                    idx.append(lst[r])
            r += 1
    else:
        idx = list(range(min(k, len(y))))
    pairs = [data.train.example(i) for i in idx]
    return torch.stack([p[0] for p in pairs]), torch.stack([torch.as_tensor(p[1]) for p in pairs])


def _dumb_predictor(data) -> tuple[str, np.ndarray]:
    if data.task == "language-model":
        return "unigram", unigram_scores(data)[0]
    y_val = data.targets("val")
    if data.task == "classification":
        majority = int(np.argmax(data.priors("train")))
        return "majority-class", (y_val.long() == majority).double().numpy()
    mean = torch.as_tensor(data.target_mean("train"))
    return "mean", ((y_val.double().reshape(len(y_val), -1) - mean) ** 2).mean(dim=1).numpy()


@torch.no_grad()
def _predict(model, x, task: str, lname: str) -> np.ndarray:
    was = model.training
    model.eval()
    out = model(x).float()
    model.train(was)
    if task == "classification":
        out = torch.sigmoid(out) if lname == "bce" else F.softmax(out, dim=1)
    return out.cpu().numpy()


def _label(data, y) -> str:
    y = torch.as_tensor(y)
    if data.task == "classification":
        return data.class_name(int(y))
    return f"{float(y.reshape(-1)[0]):.3g}"


def _prediction_text(data, out: torch.Tensor, lname: str) -> str:
    if data.task == "classification":
        p = torch.sigmoid(out) if lname == "bce" else F.softmax(out, dim=0)
        c = int(p.argmax())
        return f"{data.class_name(c)} ({float(p[c]):.2f})"
    return f"{float(out.reshape(-1)[0]):.3g}"


def _summary(spec, data, m: BaselineMeasurements, lname: str) -> dict:
    metric = m.model.val_eval.metric_name
    dumb_value = float(np.mean(m.dumb_scores))
    if data.task == "regression":  # R^2 of the mean predictor on val, for comparisons in later stages
        y = data.targets("val").double()
        dumb_metric = 1.0 - dumb_value * y.numel() / max(float(((y - y.mean(dim=0)) ** 2).sum()), 1e-12)
    elif data.task == "language-model":  # the unigram's next-token accuracy: always the most frequent token
        dumb_metric = unigram_scores(data)[1]
    else:
        dumb_metric = dumb_value
    return {
        "task": data.task,
        "data_fingerprint": data_fingerprint(data),
        "val_scores": VAL_SCORES,
        "loss": lname,
        "metric": metric,
        "steps": spec.stages.baseline.steps,
        "val_n": m.model.val_eval.n,
        "baselines": {
            m.dumb_name: {f"val_{metric}": dumb_metric, "val_scores_mean": dumb_value},
            "linear": m.linear.summary() if m.linear else None,
            "zero-input": m.zero_input.summary() if m.zero_input else None,
        },
        "model": m.model.summary(),
        "larger": m.larger.summary() if m.larger else None,
        "loss_at_init": {"observed": float(np.mean(m.init.val_losses)) if m.init.val_losses is not None else None,
                         "reference": m.init.reference},
        "train_priors": m.init.train_priors.tolist() if m.init.train_priors is not None else None,
        "target_mean": m.init.target_mean.tolist() if m.init.target_mean is not None else None,
        "overfit_one_batch": {"final_loss": m.overfit.final_loss, "steps": m.overfit.steps_run},
        "human_accuracy": spec.stages.baseline.human_accuracy,
    }
