"""Loader: order is a pure function of (seed, step); resumes exactly; process slices tile the batch."""

import numpy as np
import pytest

from steerjax.data import loader, rotations, sources


def make_source(num_objects=30, views=4, seed=0):
  rng = np.random.default_rng(seed)
  n = num_objects * views
  lat = np.stack([*(rng.uniform(-np.pi / 2, np.pi / 2, n) for _ in range(3)), rng.uniform(0, 1, n),
                  rng.uniform(0, np.pi / 4, n), rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 1, n)], -1)
  return sources.ArraySource(dict(
      image=rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8),
      label=np.repeat(np.arange(num_objects) % 3, views).astype(np.int32),
      latent=lat.astype(np.float32),
      object_id=np.repeat(np.arange(num_objects), views).astype(np.int32),
      view_id=np.tile(np.arange(views), num_objects).astype(np.int32)))


class LazySource:
  """Only __getitem__, like the tfds and 3DIEBench sources."""

  def __init__(self, inner):
    self.inner = inner
    self.has_views = inner.has_views
    self.object_table = inner.object_table

  def __len__(self):
    return len(self.inner)

  def __getitem__(self, i):
    return self.inner[i]


def single(src, seed=0, **kw):
  return loader.Loader(src, 16, seed, process_index=0, process_count=1, **kw)


def test_order_depends_only_on_seed_and_step():
  src = make_source()
  a, b, c = single(src, 0), single(src, 0), single(src, 1)
  for step in (0, 3, 7, 50):
    np.testing.assert_array_equal(a.global_indices(step), b.global_indices(step))
  assert not np.array_equal(a.global_indices(0), c.global_indices(0))
  assert not np.array_equal(a.global_indices(0), a.global_indices(a.steps_per_epoch))  # new epoch, new order


def test_each_epoch_visits_examples_at_most_once():
  src = make_source()
  ld = single(src)
  assert ld.steps_per_epoch == len(src) // 16
  seen = np.concatenate([ld.global_indices(s) for s in range(ld.steps_per_epoch)])
  assert len(np.unique(seen)) == len(seen) == ld.steps_per_epoch * 16


def test_resume_sees_the_same_batches():
  src = make_source()
  from_start = dict(single(src, 3).iterate(0, 12))
  resumed = dict(single(src, 3).iterate(5, 7))
  assert sorted(resumed) == list(range(5, 12))
  for step, batch in resumed.items():
    for key in batch:
      np.testing.assert_array_equal(batch[key], from_start[step][key])


@pytest.mark.parametrize("pairs", [False, True])
def test_process_slices_cover_global_batch_once(pairs):
  src = make_source()
  count = 4
  loaders = [loader.Loader(src, 8, 2, pairs=pairs, process_index=i, process_count=count) for i in range(count)]
  for step in (0, 1, 5):
    parts = [ld.local_indices(step) for ld in loaders]
    assert all(len(p) == 2 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), loaders[0].global_indices(step))
    batches = [ld.batch(step) for ld in loaders]
    glob = loaders[0].global_indices(step)
    first = glob[:, 0] if pairs else glob
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]), src.arrays["image"][first])
  with pytest.raises(ValueError):
    loader.Loader(src, 10, 0, process_index=0, process_count=4)


def test_pairs_are_two_views_of_one_object_with_exact_transform():
  src = make_source()
  ld = single(src, pairs=True)
  assert ld.steps_per_epoch == 30 // 16
  for step in range(4):
    batch = ld.batch(step)
    idx = ld.global_indices(step)
    a, b = src.arrays, src.arrays
    np.testing.assert_array_equal(a["object_id"][idx[:, 0]], b["object_id"][idx[:, 1]])
    assert np.all(a["view_id"][idx[:, 0]] != b["view_id"][idx[:, 1]])
    np.testing.assert_array_equal(batch["image2"], a["image"][idx[:, 1]])
    np.testing.assert_array_equal(batch["latent2"], a["latent"][idx[:, 1]])
    assert batch["transform"].shape == (16, 6) and batch["transform"].dtype == np.float32
    q = batch["transform"][:, :4].astype(np.float64)
    assert np.all(q[:, 3] >= 0)
    r_a = rotations.euler_to_matrix(batch["latent"][:, :3])
    r_b = rotations.euler_to_matrix(batch["latent2"][:, :3])
    np.testing.assert_allclose(r_a @ rotations.quaternion_to_matrix(q), r_b, atol=1e-5)
    np.testing.assert_allclose(batch["transform"][:, 4], batch["latent2"][:, 3] - batch["latent"][:, 3], atol=1e-7)
    np.testing.assert_allclose(batch["transform"][:, 5], batch["latent2"][:, 6] - batch["latent"][:, 6], atol=1e-7)
  # Objects, not examples, make the epoch: each object once per epoch.
  objs = np.concatenate([src.arrays["object_id"][ld.global_indices(s)[:, 0]] for s in range(ld.steps_per_epoch)])
  assert len(np.unique(objs)) == len(objs)


@pytest.mark.parametrize("pairs", [False, True])
def test_lazy_source_gives_the_same_batches(pairs):
  src = make_source()
  eager, lazy = single(src, 4, pairs=pairs), single(LazySource(src), 4, pairs=pairs)
  for (s1, b1), (s2, b2) in zip(eager.iterate(0, 3), lazy.iterate(0, 3)):
    assert s1 == s2 and b1.keys() == b2.keys()
    for key in b1:
      np.testing.assert_array_equal(b1[key], b2[key])


def test_pairs_need_views():
  src = sources.ArraySource(dict(image=np.zeros((20, 2, 2, 3), np.uint8), label=np.zeros(20, np.int32)))
  with pytest.raises(ValueError):
    single(src, pairs=True)
