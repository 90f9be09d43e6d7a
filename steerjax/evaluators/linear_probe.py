"""Linear probe top-1/top-5 on frozen features, next to the same probe on two references: a
randomly initialised encoder and the downsampled pixels (`eval.pixel_probe_size`, 0 for none).
An encoder that does not beat its pixels has not learned a usable representation yet.

`eval.probe_protocol`: "fast" (the eval.probe_* keys; by default 100 epochs of Adam, lr 1e-2)
or a paper's protocol from `metrics.probes.PROTOCOLS` ("equimod": 90 epochs SGD-Nesterov,
lr 0.2, cosine, batch 256), which then sets all of them."""

from steerjax.evaluators import base


def run(ctx: base.Context) -> dict:
  trained, random = ctx.probe(), ctx.probe(random_init=True)
  out = {"linear_probe_top1": trained["top1"], "linear_probe_top5": trained["top5"],
         "linear_probe_top1_random_init": random["top1"]}
  if ctx.config.eval.pixel_probe_size:
    out["linear_probe_top1_pixels"] = ctx.probe(pixels=True)["top1"]
  return out


EVALUATOR = base.Evaluator(
    "linear_probe", run, section="representation",
    keys=("linear_probe_top1", "linear_probe_top5", "linear_probe_top1_random_init",
          "linear_probe_top1_pixels"),
    # 16² x 3 = 768 pixel features: as wide as a ResNet's, small enough at ImageNet's size.
    defaults=dict(probe_protocol="fast", probe_epochs=100, probe_lr=1e-2, probe_batch_size=256,
                  probe_optimizer="adam", pixel_probe_size=16))
