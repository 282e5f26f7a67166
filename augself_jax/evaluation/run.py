"""The evaluation binary's body: restore the backbone, extract each dataset's features once,
run the protocols of the config's `eval` section on them (evaluation/common.py), write
DIR/eval/step_<N>/results.{json,md} (+ figures and --save_features files) and copy the
results to DIR/eval/results.{json,md} as the latest (evaluation/reports.py)."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from augself_jax.data import eval_datasets as eds
from augself_jax.data import source
from augself_jax.data.eval_input import eval_batches
from augself_jax.evaluation import common, reports
from augself_jax.evaluation import registry as protocols
from augself_jax.evaluation.features import FeatureExtractor, eval_mesh

CONTINUOUS_KEYS = ("hue_angle", "center_x", "center_y", "size_value")  # the built-in dataset's


def write_features(eval_dir: str, task: str, **arrays: np.ndarray) -> str:
    """eval_dir/task/features.npz through epath (a gs:// workdir keeps it); returns its path."""
    directory = epath.Path(eval_dir) / task
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # np.savez seeks, which a GCS stream cannot
    np.savez(buffer, **arrays)
    path = directory / "features.npz"
    path.write_bytes(buffer.getvalue())
    return str(path)


def validate_eval_config(config: ml_collections.ConfigDict, num_devices: int | None = None
                         ) -> list[type[common.Evaluator]]:
    """ConfigError (one line naming the field) for anything evaluate.py cannot run; returns
    the protocol classes. Each protocol checks its own fields (registry.validate)."""
    from augself_jax.data.global_batch import check_batch_divides

    classes = protocols.validate(config)
    for name in common.split_list(config.eval.datasets):
        eds.get_linear_dataset(name)
    check_batch_divides("eval.batch_size", int(config.eval.batch_size),
                        data_axis=num_devices or jax.device_count(),
                        process_count=jax.process_count())
    return classes


def _data_dir(config: ml_collections.ConfigDict) -> str | None:
    return config.eval.data_dir or config.data.data_dir


def _label_ints(builder: tfds.core.DatasetBuilder, key: str, names: tuple[str, ...]
                ) -> tuple[int, ...]:
    return tuple(int(builder.info.features[key].str2int(n)) for n in names)


class _Collect:
    """Wraps a batch iterator: adds the protocols' per-image statistics; keeps the first
    images."""

    def __init__(self, batches: Iterator[dict], evaluators: list[common.Evaluator],
                 keep_images: int = 0):
        self.batches, self.evaluators = batches, evaluators
        self.keep_images, self.images = keep_images, []

    def __iter__(self):
        kept = 0
        for batch in self.batches:
            for evaluator in self.evaluators:
                batch.update(evaluator.image_statistics(batch["image"]))
            if kept < self.keep_images:
                valid = batch["image"][batch["mask"].astype(bool)]
                self.images.append(valid[: self.keep_images - kept])
                kept += len(self.images[-1])
            yield batch


def _first_images(kept: list[np.ndarray], count: int, size: int) -> np.ndarray:
    """The first `count` images over all processes, the same array on every process (each
    process kept the first of its own shard; protocols treat the result as global)."""
    local = np.concatenate(kept) if kept else np.zeros((0, size, size, 3), np.uint8)
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    padded = np.zeros((count, *local.shape[1:]), np.uint8)
    padded[:len(local)] = local
    valid = np.arange(count) < len(local)
    padded, valid = multihost_utils.process_allgather((padded, valid), tiled=True)
    return padded[valid][:count]


class EvaluationRun:
    """One evaluate.py run: restore the backbone, extract each dataset's features once, hand
    them to every protocol of `eval.protocols` (common.Evaluator), write the results."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
                 step: int | str | None, save_features: bool = False, log=print,
                 writer=None):
        self.config, self.workdir, self.log, self.writer = config, workdir, log, writer
        self.save_features = save_features
        self.eval_dir = os.path.join(workdir, "eval")
        self.data_dir = _data_dir(config)
        self.mesh = eval_mesh()
        self._requested_step = step
        self.records: list[dict] = []

    # -- set-up that can fail with a clear line, before anything is compiled -------------
    def prepare(self) -> None:
        from augself_jax.checkpoints.restore import restore_backbone
        from augself_jax.data import registry as datasets

        classes = validate_eval_config(self.config)
        e = self.config.eval
        on = {cls.on for cls in classes}
        self.linear_sets = ([eds.get_linear_dataset(n) for n in common.split_list(e.datasets)]
                            if "linear" in on or self.save_features else [])
        self.fewshot_sets = ([eds.get_fewshot_dataset(n)
                              for n in common.split_list(e.fewshot_datasets)]
                             if "fewshot" in on else [])
        self.builders = {}
        for d in [*self.linear_sets, *self.fewshot_sets]:
            if d.tfds_name not in self.builders:
                self.builders[d.tfds_name] = source.prepared_builder(
                    d.tfds_name, data_dir=self.data_dir, field="eval.datasets", name=d.name,
                    manual=d.manual, manual_dir=e.manual_dir)
        info = datasets.get(self.config.data.dataset)
        self.backbone, self.step = restore_backbone(self.workdir, self.config,
                                                    self._requested_step)
        self.step_dir = reports.step_dir(self.eval_dir, int(self.step))
        context = common.Context(backbone=self.backbone, mesh=self.mesh, mean=info.mean,
                                 std=info.std, eval_dir=self.step_dir, step=int(self.step),
                                 log=self.log, writer=self.writer,
                                 run_name=os.path.basename(os.path.normpath(self.workdir)))
        self.evaluators = protocols.build(self.config, context)
        self.extractor = FeatureExtractor(self.mesh, info.mean, info.std)
        from augself_jax.checkpoints.store import BEST

        chosen = ("best" if self._requested_step == BEST
                  else "latest" if self._requested_step is None else "step")
        self.common = {"step": int(self.step), "checkpoint": chosen,
                       "config_hash": reports.config_hash(self.config)}
        self.log(f"evaluating {reports.checkpoint_label(self.common)} of {self.workdir}; "
                 f"results in {self.step_dir}")

    def _extract(self, builder, split: str, keys: tuple[str, ...], *, keep=None,
                 drop_labels=(), label_key="label", keep_images: int = 0, point_keys=()):
        batches, _ = eval_batches(
            builder, split, image_size=int(self.config.data.image_size),
            batch_size=int(self.config.eval.batch_size) // jax.process_count(), keys=keys,
            keep=keep, drop_labels=drop_labels, label_key=label_key,
            process_index=jax.process_index(), process_count=jax.process_count(),
            max_examples=int(self.config.eval.max_examples), point_keys=point_keys)
        collect = _Collect(batches, self.evaluators, keep_images)
        out = self.extractor(self.backbone, collect)
        images = (_first_images(collect.images, keep_images, int(self.config.data.image_size))
                  if keep_images else None)
        return out, images

    def _add(self, protocol: str, result: common.Result) -> None:
        # No line per number: the table is printed once, at the end (cli/evaluate.py).
        self.records.append(reports.record(result.task, protocol, result.metric, result.value,
                                           unit=result.unit, **self.common, **result.extra))

    # -- features of each kind of dataset ------------------------------------------------
    def linear_features(self, d: eds.EvalDataset) -> common.Features:
        """train / val / test features of a linear dataset (docs/EVALUATION.md section 6)."""
        e = self.config.eval
        builder = self.builders[d.tfds_name]
        present = set(builder.info.features)
        keys = tuple(k for k in d.label_keys + CONTINUOUS_KEYS + eds.BOX_KEYS if k in present)
        label_key = d.label_keys[0] if d.label_keys else None  # None: celeba (landmarks)
        drop = _label_ints(builder, label_key, d.drop_label_names) if label_key else ()
        keep, relabel = eds.class_subset(builder, d)  # ImageNet-100: relabelled 0..99
        kw = dict(keys=keys, keep=keep, drop_labels=drop, label_key=label_key,
                  point_keys=d.point_keys)
        t0 = time.time()
        num_images = max([ev.images_needed() for ev in self.evaluators if ev.on == "linear"],
                         default=0)
        test, test_images = self._extract(builder, d.test_split, keep_images=num_images, **kw)
        trainval, _ = self._extract(builder, d.trainval_split, **kw)
        if d.val_split:
            val, _ = self._extract(builder, d.val_split, **kw)
            train = trainval
            split_info = {"val_split": d.val_split}
        else:
            tr_idx, va_idx = eds.validation_split(len(trainval["features"]), d, e.val_seed)
            train = {k: v[tr_idx] for k, v in trainval.items()}
            val = {k: v[va_idx] for k, v in trainval.items()}
            split_info = {"val_seed": int(e.val_seed)}
        splits = {"train": train, "val": val, "test": test}
        if d.shots:  # k per class for the sweep, and k per class of train + val for the refit
            splits["train"], splits["refit"] = eds.few_shot_splits(
                train, val, label_key, d.shots, int(e.val_seed))
            train = splits["train"]
            split_info = {**split_info, "shots": d.shots, "val_seed": int(e.val_seed)}
        if relabel is not None:
            for split in splits.values():
                split[label_key] = relabel[split[label_key]]
        sizes = {"n_train": len(train["features"]), "n_val": len(val["features"]),
                 "n_test": len(test["features"]), **split_info}
        self.log(f"{d.name}: features {train['features'].shape[1]}-d, train {sizes['n_train']}"
                 f" / val {sizes['n_val']} / test {sizes['n_test']} ({time.time() - t0:.0f}s)")
        return common.Features(d.name, d.label_keys, splits,
                               task_names={k: d.task_name(k) for k in d.label_keys},
                               metric=d.metric, images=test_images, info=sizes)

    def fewshot_features(self, d: eds.FewShotDataset) -> common.Features:
        builder = self.builders[d.tfds_name]
        pool, _ = self._extract(builder, d.split, d.label_keys, keep=d.keep,
                                label_key=d.label_keys[0])
        return common.Features(d.name, d.label_keys, {"pool": pool},
                               task_names={k: d.task_name(k) for k in d.label_keys})

    def _save(self, features: common.Features) -> None:
        if not self.save_features or jax.process_index() != 0:
            return
        # Each split's features once, with every label task's labels beside them.
        arrays = {}
        for split in ("train", "val", "test"):
            arrays[f"{split}_x"] = features.splits[split]["features"]
            for key in features.label_keys:
                arrays[f"{split}_y_{key}"] = features.splits[split][key]
        path = write_features(self.step_dir, features.name, **arrays)
        self.log(f"{features.name}: features saved to {path}")

    def run(self) -> list[dict]:
        for kind, datasets, extract in (("linear", self.linear_sets, self.linear_features),
                                        ("fewshot", self.fewshot_sets, self.fewshot_features)):
            for d in datasets:
                features = extract(d)
                if kind == "linear":
                    self._save(features)
                for evaluator in self.evaluators:
                    if evaluator.on == kind:
                        t0 = time.time()
                        results = evaluator.run(features)
                        for result in results:
                            self._add(evaluator.name, result)
                        self.log(f"{d.name}: {evaluator.name} done, {len(results)} numbers "
                                 f"({time.time() - t0:.0f}s)")
        table = self.records
        if jax.process_index() == 0:
            table, json_path, kept = reports.save_step_results(self.records, self.eval_dir,
                                                               int(self.step))
            earlier = (f"; {kept} numbers of an earlier evaluation of this step kept"
                       if kept else "")
            self.log(f"results: {json_path} and results.md beside it{earlier}; copied to "
                     f"{self.eval_dir}/results.{{json,md}} as the latest")
        if self.writer is not None and self.records:
            self.writer.write_scalars(int(self.step), {
                f"eval/{r['dataset']}/{r['protocol']}/{r['metric']}": r["value"]
                for r in self.records})
            self.writer.flush()
        return table


def evaluate(config: ml_collections.ConfigDict, workdir: str, *,
             step: int | str | None = None, save_features: bool = False, log=print,
             writer=None) -> list[dict]:
    """Everything evaluate.py does, callable from Python; returns the records. `step`: a
    checkpoint step, 'best' (the best kNN-monitor checkpoint) or None (the latest)."""
    ev = EvaluationRun(config, workdir, step=step, save_features=save_features, log=log,
                       writer=writer)
    ev.prepare()
    return ev.run()
