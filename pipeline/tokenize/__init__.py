"""Tokenizer training and token shards: the last room of the pipeline wing.

- ``train.py``: ``refinery train-tokenizer``: a seeded, byte-budgeted uniform sample of refined documents
  (a Beam step), then a GPT-2-style byte-level BPE trained with Hugging Face ``tokenizers``.
- ``encode.py``: ``refinery tokenize``: a Beam pipeline that encodes documents and writes token shards.
- ``shards.py``: the token-shard format (Arrow IPC file, uncompressed, ``id`` + ``tokens``) and manifest.
- ``documents.py``: finding and reading the refined document shards (``OUT/documents/*.arrow``).
- ``cli.py``: argument parsers and entry points that the ``refinery`` command calls.
- ``stage.py``: the ``tokenize`` collection stage (token shards as the terminal step of a pipeline).

Conventions: ``<|endoftext|>`` is always special token id 0 (the trainer puts special tokens first, then
the 256 byte symbols, then merges); every document's token row ends with it.
"""

EOT_TOKEN = "<|endoftext|>"


from pipeline.errors import UserError

class UsageError(UserError, ValueError):
    """Bad user input (path, empty input, impossible parameter): the CLI prints the one-line message."""
