"""The quality layer after RefinedWeb: model-based quality scoring, benchmark decontamination, PII redaction.

``classifier`` (fastText training in our own code + prediction through fastText's C++), ``decontam``
(n-gram index of the eval sets), ``pii`` (patterns and redaction) are pure Python; ``stages`` holds the
three document stages of pipelines.yaml, ``keep_top`` the corpus-wide cut-off (Beam only inside its
transform), ``train_cli`` the ``refinery train-classifier`` command, ``summary`` report.json's section.
"""
