"""The binaries' TensorFlow import (app.hide_accelerators_from_tensorflow): Keras is left
out of it, and stays importable. Run in a fresh interpreter, since the test process has
imported TensorFlow already."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = """
import json, sys
from augself_jax import app
app.hide_accelerators_from_tensorflow()
loaded_with_tensorflow = sorted(m for m in sys.modules if m == "keras" or m.startswith("keras."))
import tensorflow as tf
import keras.src.optimizers
print(json.dumps({"tensorflow": "tensorflow" in sys.modules,
                  "keras_with_tensorflow": loaded_with_tensorflow,
                  "optimizers_later": sys.modules["keras.src.optimizers"] is not None,
                  "tf_keras_dense": tf.keras.layers.Dense.__name__,
                  "gpus_visible": len(tf.config.get_visible_devices("GPU"))}))
"""


def test_tensorflow_is_imported_without_keras_which_still_loads_on_use():
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"tensorflow": True, "keras_with_tensorflow": [], "optimizers_later": True,
                    "tf_keras_dense": "Dense", "gpus_visible": 0}
