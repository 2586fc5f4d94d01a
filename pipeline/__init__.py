"""webrefinery's Beam wing: raw web archives -> refined documents -> tokenizer -> token shards."""

__version__ = "0.1.0"
