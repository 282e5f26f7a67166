"""The evaluation binary's body: restore the backbone, extract features, run the protocols of
the config's `eval` section, write DIR/eval/results.{json,md} (+ sensitivity plots)."""

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
from augself_jax.data.eval_input import eval_batches
from augself_jax.errors import ConfigError
from augself_jax.evaluation import fewshot, knn, linear, probes, reports, sensitivity
from augself_jax.evaluation.features import FeatureExtractor, eval_mesh

PROTOCOLS = ("linear", "fewshot", "knn", "sensitivity", "probe")
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


def _list(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


def validate_eval_config(config: ml_collections.ConfigDict, num_devices: int | None = None
                         ) -> None:
    """ConfigError (one line naming the field) for anything evaluate.py cannot run."""
    e = config.eval
    for p in _list(e.protocols):
        if p not in PROTOCOLS:
            raise ConfigError(f"eval.protocols: unknown protocol '{p}'; allowed: "
                              f"{', '.join(PROTOCOLS)}")
    if not _list(e.protocols):
        raise ConfigError(f"eval.protocols: empty; allowed: {', '.join(PROTOCOLS)}")
    for name in _list(e.datasets):
        eds.get_linear_dataset(name)
    if "fewshot" in _list(e.protocols):
        for name in _list(e.fewshot_datasets):
            eds.get_fewshot_dataset(name)
        for k in _list(e.fewshot.shots):
            if not k.isdigit() or int(k) < 1:
                raise ConfigError(f"eval.fewshot.shots: '{k}' is not a positive integer")
        if e.fewshot.ways < 2 or e.fewshot.queries < 1 or e.fewshot.episodes < 1:
            raise ConfigError("eval.fewshot: ways >= 2, queries >= 1 and episodes >= 1 needed")
    for k in _list(e.knn_k):
        if not k.isdigit() or int(k) < 1:
            raise ConfigError(f"eval.knn_k: '{k}' is not a positive integer")
    for a in _list(e.sensitivity.augmentations):
        if a not in sensitivity.AUGMENTATIONS:
            raise ConfigError(f"eval.sensitivity.augmentations: unknown '{a}'; allowed: "
                              f"{', '.join(sensitivity.AUGMENTATIONS)}")
    num_devices = num_devices or jax.device_count()
    if e.batch_size < 1 or e.batch_size % num_devices:
        raise ConfigError(f"eval.batch_size: {e.batch_size} does not divide over the "
                          f"{num_devices} devices; allowed: a positive multiple of {num_devices}")
    if not (0 < e.linear.l2_min <= e.linear.l2_max) or e.linear.l2_num < 1:
        raise ConfigError("eval.linear: need 0 < l2_min <= l2_max and l2_num >= 1")


def _data_dir(config: ml_collections.ConfigDict) -> str | None:
    return config.eval.data_dir or config.data.data_dir


def prepared_builder(tfds_name: str, *, data_dir: str | None, manual: bool,
                     manual_dir: str | None, registry_name: str) -> tfds.core.DatasetBuilder:
    """The TFDS builder, prepared: the built-in dataset is generated here, a manual-download
    dataset is built from manual_dir, anything else must already be prepared."""
    from augself_jax.data import shapes  # noqa: F401  (registers augself_shapes)

    builder = tfds.builder(tfds_name, data_dir=data_dir, try_gcs=False)
    if builder.is_prepared():
        return builder
    if tfds_name.startswith("augself_shapes"):
        builder.download_and_prepare()
    elif manual:
        if not manual_dir:
            raise ConfigError(
                f"eval.manual_dir: dataset {registry_name} is not prepared in "
                f"{builder.data_dir} and needs a manual download; "
                + " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    else:
        raise ConfigError(
            f"eval.datasets: dataset {registry_name} ({tfds_name}) is not prepared in "
            f"{data_dir or '~/tensorflow_datasets'}; prepare it where there is internet with "
            f"`tfds build {tfds_name} --data_dir=<dir>` (or `python -c \"import "
            f"tensorflow_datasets as tfds; tfds.builder('{tfds_name}', data_dir='<dir>')"
            f".download_and_prepare()\"`) and pass --config.eval.data_dir=<dir>")
    return builder


def _label_ints(builder: tfds.core.DatasetBuilder, key: str, names: tuple[str, ...]
                ) -> tuple[int, ...]:
    return tuple(int(builder.info.features[key].str2int(n)) for n in names)


class _Collect:
    """Wraps a batch iterator: adds each image's colour histogram; keeps the first images."""

    def __init__(self, batches: Iterator[dict], keep_images: int = 0):
        self.batches, self.keep_images, self.images = batches, keep_images, []

    def __iter__(self):
        kept = 0
        for batch in self.batches:
            batch["color_hist"] = probes.color_histogram(batch["image"])
            if kept < self.keep_images:
                valid = batch["image"][batch["mask"].astype(bool)]
                self.images.append(valid[: self.keep_images - kept])
                kept += len(self.images[-1])
            yield batch


class Evaluator:
    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, step: int | None,
                 save_features: bool = False, log=print):
        self.config, self.workdir, self.log = config, workdir, log
        self.save_features = save_features
        self.eval_dir = os.path.join(workdir, "eval")
        self.protocols = _list(config.eval.protocols)
        self.data_dir = _data_dir(config)
        self.mesh = eval_mesh()
        self._requested_step = step
        self.records: list[dict] = []

    # -- set-up that can fail with a clear line, before anything is compiled -------------
    def prepare(self) -> None:
        from augself_jax.checkpoints import restore_backbone
        from augself_jax.data.registry import get_dataset_info

        validate_eval_config(self.config)
        e = self.config.eval
        self.linear_sets = [eds.get_linear_dataset(n) for n in _list(e.datasets)]
        self.fewshot_sets = ([eds.get_fewshot_dataset(n) for n in _list(e.fewshot_datasets)]
                             if "fewshot" in self.protocols else [])
        self.builders = {}
        for d in [*self.linear_sets, *self.fewshot_sets]:
            if d.tfds_name not in self.builders:
                self.builders[d.tfds_name] = prepared_builder(
                    d.tfds_name, data_dir=self.data_dir, manual=d.manual,
                    manual_dir=e.manual_dir, registry_name=d.name)
        info = get_dataset_info(self.config.data.dataset)
        self.mean, self.std = info.mean, info.std
        self.backbone, self.step = restore_backbone(self.workdir, self.config,
                                                    self._requested_step)
        self.extractor = FeatureExtractor(self.backbone, self.mesh, self.mean, self.std)
        self.common = {"step": int(self.step), "config_hash": reports.config_hash(self.config)}

    def _extract(self, builder, split: str, keys: tuple[str, ...], *, keep=None,
                 drop_labels=(), label_key="label", keep_images: int = 0):
        batches, _ = eval_batches(
            builder, split, image_size=int(self.config.data.image_size),
            batch_size=int(self.config.eval.batch_size) // jax.process_count(), keys=keys,
            keep=keep, drop_labels=drop_labels, label_key=label_key,
            process_index=jax.process_index(), process_count=jax.process_count(),
            max_examples=int(self.config.eval.max_examples))
        collect = _Collect(batches, keep_images)
        out = self.extractor(collect)
        images = np.concatenate(collect.images) if collect.images else None
        return out, images

    def _add(self, dataset, protocol, metric, value, **extra):
        r = reports.record(dataset, protocol, metric, value, **self.common, **extra)
        self.records.append(r)
        unit = "°" if r["unit"] == "deg" else ""
        ci = f" ± {r['ci95']:.2f}" if "ci95" in r else ""
        self.log(f"{dataset:>16} {protocol:>12} {metric:>20} {r['value']:8.2f}{ci}{unit}")

    # -- protocols ----------------------------------------------------------------------
    def linear_dataset(self, d: eds.EvalDataset) -> None:
        e = self.config.eval
        builder = self.builders[d.tfds_name]
        present = set(builder.info.features)
        keys = tuple(k for k in d.label_keys + CONTINUOUS_KEYS if k in present)
        drop = _label_ints(builder, d.label_keys[0], d.drop_label_names)
        kw = dict(keys=keys, keep=d.keep, drop_labels=drop, label_key=d.label_keys[0])
        t0 = time.time()
        num_sens = int(e.sensitivity.num_images) if "sensitivity" in self.protocols else 0
        test, test_images = self._extract(builder, d.test_split, keep_images=num_sens, **kw)
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
        sizes = {"n_train": len(train["features"]), "n_val": len(val["features"]),
                 "n_test": len(test["features"]), **split_info}
        self.log(f"{d.name}: features {train['features'].shape[1]}-d, train {sizes['n_train']}"
                 f" / val {sizes['n_val']} / test {sizes['n_test']} ({time.time() - t0:.0f}s)")
        grid = tuple(np.logspace(np.log10(e.linear.l2_min), np.log10(e.linear.l2_max),
                                 int(e.linear.l2_num)))
        for key in d.label_keys:
            task = d.task_name(key)
            ytr, yva, yte = train[key], val[key], test[key]
            num_classes = int(max(ytr.max(), yva.max(), yte.max()) + 1)
            if self.save_features and jax.process_index() == 0:
                write_features(self.eval_dir, task, train_x=train["features"], train_y=ytr,
                               val_x=val["features"], val_y=yva, test_x=test["features"],
                               test_y=yte)
            if "linear" in self.protocols:
                res = linear.linear_eval((train["features"], ytr), (val["features"], yva),
                                         (test["features"], yte), num_classes, metric=d.metric,
                                         l2_grid=grid, max_iter=int(e.linear.max_iter),
                                         tol=float(e.linear.tol), mesh=self.mesh)
                self._add(task, "linear", d.metric, res.test, l2=res.l2, val_value=res.val,
                          **sizes)
            if "knn" in self.protocols:
                ks = [int(k) for k in _list(e.knn_k)]
                accs = knn.knn_accuracy(train["features"], ytr, test["features"], yte, ks=ks,
                                        num_classes=num_classes)
                for k, acc in accs.items():
                    self._add(task, "knn", f"top1_k{k}", acc, **sizes)
        if "probe" in self.protocols:
            kinds = ["color_hist"] + [k for k, src in (("hue", "hue_angle"),
                                                       ("position", "center_x"),
                                                       ("size", "size_value")) if src in keys]
            for kind in kinds:
                for r in probes.probe(kind, train, val, test):
                    unit = "deg" if r.metric.endswith("deg") else "%"
                    self._add(d.name, "probe", f"{kind}_{r.metric}" if unit == "%" else r.metric,
                              r.value, unit=unit, ridge_penalty=r.penalty, **sizes)
        if "sensitivity" in self.protocols and test_images is not None:
            augs = _list(e.sensitivity.augmentations)
            sens = sensitivity.sensitivity(self.backbone, test_images, self.config.aug,
                                           self.mean, self.std, mesh=self.mesh,
                                           augmentations=augs, seed=int(self.config.seed))
            for stage, kinds in sens.items():
                for kind, cos in kinds.items():
                    self._add(d.name, "sensitivity", f"cos_{kind}@{stage}", 100.0 * cos,
                              n_images=len(test_images))
            if jax.process_index() == 0:
                path = sensitivity.plot(sens, os.path.join(self.eval_dir,
                                                           f"sensitivity_{d.name}.png"),
                                        title=f"{d.name}, step {self.step}")
                self.log(f"{d.name}: sensitivity plot {path}")

    def fewshot_dataset(self, d: eds.FewShotDataset) -> None:
        e = self.config.eval
        builder = self.builders[d.tfds_name]
        pool, _ = self._extract(builder, d.split, d.label_keys, keep=d.keep,
                                label_key=d.label_keys[0])
        for key in d.label_keys:
            labels = pool[key]
            ways = min(int(e.fewshot.ways), len(np.unique(labels)))
            for k in (int(s) for s in _list(e.fewshot.shots)):
                res = fewshot.fewshot_eval(pool["features"], labels, n_way=ways, k_shot=k,
                                           n_query=int(e.fewshot.queries),
                                           num_episodes=int(e.fewshot.episodes),
                                           seed=int(self.config.seed), c=float(e.fewshot.c))
                self._add(d.task_name(key), "fewshot", f"{ways}way{k}shot", res.mean,
                          ci95=round(res.ci95, 4), c=float(e.fewshot.c),
                          episodes=int(e.fewshot.episodes), queries=int(e.fewshot.queries))

    def run(self) -> list[dict]:
        for d in self.linear_sets:
            if set(self.protocols) - {"fewshot"}:
                self.linear_dataset(d)
        for d in self.fewshot_sets:
            self.fewshot_dataset(d)
        if jax.process_index() == 0:
            json_path, md_path = reports.write_results(self.records, self.eval_dir)
            self.log(f"results: {json_path} and {md_path}")
        return self.records


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, step: int | None = None,
             save_features: bool = False, log=print) -> list[dict]:
    """Everything evaluate.py does, callable from Python; returns the records."""
    ev = Evaluator(config, workdir, step=step, save_features=save_features, log=log)
    ev.prepare()
    return ev.run()
