"""Linear probe top-1/top-5 on frozen features, next to the same probe on a random-init encoder."""

from steerjax.evaluators import base


def run(ctx: base.Context) -> dict:
  trained, random = ctx.probe(), ctx.probe(random_init=True)
  return {"linear_probe_top1": trained["top1"], "linear_probe_top5": trained["top5"],
          "linear_probe_top1_random_init": random["top1"]}


EVALUATOR = base.Evaluator(
    "linear_probe", run, section="representation",
    keys=("linear_probe_top1", "linear_probe_top5", "linear_probe_top1_random_init"),
    # The probe head is also what TTA, OOD and transfer classify with.
    defaults=dict(probe_epochs=100, probe_lr=1e-2, probe_batch_size=256, probe_optimizer="adam"))
