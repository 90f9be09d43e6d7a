"""Linear probes on the frozen encoder for each prepared `eval.transfer_datasets`."""

from steerjax.evaluators import base
from steerjax.metrics import probes


def run(ctx: base.Context) -> dict:
  e, out, missing = ctx.config.eval, {}, []
  if not e.transfer_datasets:
    raise base.NotApplicable("eval.transfer_datasets is empty")
  for name in e.transfer_datasets:
    train = ctx.tfds_arrays(name, "train")
    test = ctx.tfds_arrays(name, "test") or ctx.tfds_arrays(name, "validation")
    if train is None or test is None:
      missing.append(name)
      continue
    feats = [d["features"] for d in (train, test)]
    num_classes = int(max(train["label"].max(), test["label"].max())) + 1
    result = probes.linear_probe(feats[0], train["label"], feats[1], test["label"], num_classes,
                                 **ctx.probe_settings())
    out[f"transfer_{name.replace('/', '_')}_top1"] = result["top1"]
  if not out:
    raise base.NotApplicable(f"none of {', '.join(missing)} is prepared in data.data_dir "
                             "(prepare with `tfds build NAME` where TensorFlow is installed)")
  return out


EVALUATOR = base.Evaluator("transfer", run, section="representation", keys=("transfer_{}_top1",),
                           defaults=dict(transfer_datasets=()))
