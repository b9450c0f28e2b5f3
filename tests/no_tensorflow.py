"""Run a module as __main__ in a process where `import tensorflow` fails, as on a GPU machine without it.

    python tests/no_tensorflow.py tinyconv train --profile ci ...

A sys.meta_path finder refuses tensorflow (and tf_keras, tensorboard) before anything else is imported,
so any code path that reaches for TensorFlow fails loudly with ModuleNotFoundError.
"""

import runpy
import sys

BLOCKED = ("tensorflow", "tf_keras", "tensorboard")


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: this process runs without TensorFlow)")
        return None


sys.meta_path.insert(0, _Blocker())
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
