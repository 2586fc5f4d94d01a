"""Dedup kernels are compiled on first use (``pipeline.dedup.jit``): building a dedup graph does not import
numba, the first kernel call does, and kernels that call kernels of other modules work."""

import json
import subprocess
import sys

import numpy as np

from pipeline.dedup import jit


def test_building_a_dedup_graph_does_not_import_numba_and_the_first_kernel_call_does():
    code = (
        "import json, sys\n"
        "import apache_beam as beam\n"
        "from pipeline.dedup.fused import FusedDedup\n"
        "from pipeline.dedup.stages import ExactDedupParams, ExactDedupStage, MinhashDedupParams, MinhashDedupStage,"
        " SubstringDedupParams, SubstringDedupStage, UrlDedupParams, UrlDedupStage\n"
        "import pipeline.dedup.substring, pipeline.dedup.normalize, pipeline.dedup.minhash.hashing\n"
        "p = beam.Pipeline()\n"
        "docs = p | beam.Create([{'id': 'a', 'text': 'x'}])\n"
        "stages = [ExactDedupStage(ExactDedupParams()), UrlDedupStage(UrlDedupParams()), MinhashDedupStage(MinhashDedupParams())]\n"
        "kept, rejected = docs | FusedDedup(stages)\n"
        "kept | SubstringDedupStage(SubstringDedupParams()).beam_transform()\n"
        "before = 'numba' in sys.modules\n"
        "from pipeline.dedup.minhash.hashing import MinHasher\n"
        "hashes = MinHasher(64, 1, 5, 'affine32', 'sha1').shingle_hashes('Hello, world! It is 2019 and a fine day.')\n"
        "print(json.dumps([before, 'numba' in sys.modules, len(hashes)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after, shingles = json.loads(out.strip().splitlines()[-1])
    assert before is False and after is True and shingles > 0


def test_lazy_kernels_compile_together_call_across_modules_and_pickle_by_name():
    import pickle

    home, user = {"__name__": "lazy_home"}, {"__name__": "lazy_user"}
    exec("from pipeline.dedup.jit import lazy_njit\n"
         "@lazy_njit(nogil=True)\n"
         "def step(x):\n    return x * 2\n"
         "@lazy_njit()\n"
         "def twice(x):\n    return step(step(x))\n", home)
    user.update(twice=home["twice"], jit=jit)
    exec("from pipeline.dedup.jit import lazy_njit\n"
         "@lazy_njit()\n"
         "def plus_one_of_twice(a):\n    out = a.copy()\n    for i in range(a.shape[0]):\n        out[i] = twice(a[i]) + 1\n    return out\n", user)
    assert isinstance(home["twice"], jit.LazyKernel)
    got = user["plus_one_of_twice"](np.arange(4, dtype=np.int64))  # compiles this module's kernels and twice's home's
    assert got.tolist() == [1, 5, 9, 13]
    assert not isinstance(home["step"], jit.LazyKernel) and not isinstance(user["twice"], jit.LazyKernel)
    from pipeline.dedup import normalize

    # a LazyKernel pickles as a reference to its module's attribute (what that attribute is by then)
    assert pickle.loads(pickle.dumps(jit.LazyKernel(normalize.nfkc, {}))) is normalize.nfkc
