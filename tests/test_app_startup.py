"""The binaries' imports of TensorFlow and of the metric writers (app.py): Keras is left out
of the first, its optional integrations out of the second, and all of them stay importable.
Run in a fresh interpreter, since the test process has imported all of them already."""

import os

from conftest import fresh_interpreter_json

PROGRAM = """
import json, sys
from augself_jax import app
app.hide_accelerators_from_tensorflow()
loaded_with_tensorflow = sorted(m for m in sys.modules if m == "keras" or m.startswith("keras."))
app.import_metric_writers()
integrations = ("sklearn", "matplotlib", "IPython")
loaded_with_writers = sorted(m for m in integrations if m in sys.modules)
# The writers still write: TensorBoard's hparams (the Keras-loading import) and a scalar.
from clu import metric_writers
writer = metric_writers.SummaryWriter(sys.argv[1])
writer.write_hparams({"lr": 0.1})
writer.write_scalars(1, {"loss": 2.5})
writer.close()
import tensorflow as tf
import keras.src.optimizers
import sklearn.base, matplotlib.pyplot, IPython
print(json.dumps({"tensorflow": "tensorflow" in sys.modules,
                  "keras_with_tensorflow": loaded_with_tensorflow,
                  "keras_with_writers": "keras" in sys.modules,
                  "integrations_with_writers": loaded_with_writers,
                  "integrations_later": [sys.modules[m] is not None for m in integrations],
                  "optimizers_later": sys.modules["keras.src.optimizers"] is not None,
                  "tf_keras_dense": tf.keras.layers.Dense.__name__,
                  "gpus_visible": len(tf.config.get_visible_devices("GPU"))}))
"""


def _events(directory: str) -> dict[str, list]:
    """Tag -> values of the event files in `directory`, read with TensorFlow's own reader."""
    import tensorflow as tf

    seen: dict[str, list] = {}
    for name in os.listdir(directory):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                seen.setdefault(value.tag, []).append(
                    float(tf.make_ndarray(value.tensor)) if value.tag == "loss" else None)
    return seen


def test_tensorflow_and_the_writers_are_imported_without_keras_parts_that_load_on_use(
        tmp_path):
    seen = fresh_interpreter_json(PROGRAM, str(tmp_path))
    assert seen == {"tensorflow": True, "keras_with_tensorflow": [],
                    "keras_with_writers": True, "integrations_with_writers": [],
                    "integrations_later": [True, True, True], "optimizers_later": True,
                    "tf_keras_dense": "Dense", "gpus_visible": 0}
    events = _events(str(tmp_path))
    assert events["loss"] == [2.5]
    assert "_hparams_/session_start_info" in events
