# The rollguard image: the CLI, the worker, the dashboard and the demo's model service, in a
# virtual environment (/opt/rollguard) on any Debian-like image with Python 3.11+ and venv.
# docker-compose.yml builds it on python:3.11-slim (ROLLGUARD_PYTHON_IMAGE); where no image
# registry answers, docker/offline-images.sh builds a stand-in base (docs/compose.md).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/rollguard PATH=/opt/rollguard/bin:$PATH
RUN python3 -m venv /opt/rollguard \
 && useradd --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin rollguard \
 && mkdir -p /app /data && chown rollguard /data
WORKDIR /app
# the dependencies first, in their own layer: a change to rollguard's code reuses it
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      >/tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md ./
COPY rollguard ./rollguard
RUN pip install --no-deps . && rm -rf build rollguard.egg-info
COPY examples ./examples
# /data: the worker's data dir (pending joins, liveness.json), the demo service's registry;
# docker-compose.yml mounts a volume there (a volume starts with this directory's owner)
USER rollguard
# marks the images built here: .ci/compose removes those a newer build left untagged (last,
# so that the layers above stay cached)
LABEL io.rollguard.image=rollguard
ENTRYPOINT []
CMD ["rollguard", "--help"]
