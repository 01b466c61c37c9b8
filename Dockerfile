# syntax=docker/dockerfile:1
# One image for the operator, the API, the migrations Job and the session workers:
#   salon-sessions operator | api | worker | migrate up | qr <company>
# Multi-stage: the build stage builds the project's wheel and installs it with its
# dependencies into a virtualenv; the runtime stage copies only that virtualenv.
# The development machines build it with buildah, without a registry (devstack/images.py:
# PYTHON_IMAGE is a Debian stand-in there, the host's CA bundle is mounted into the RUN
# steps); tests/chart/test_image.py checks that image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- base: the system libraries and the unprivileged user, shared by both stages
FROM ${PYTHON_IMAGE} AS base
# libmagic: python-magic (a neonize dependency) loads it on import. Versions follow the
# base image's Debian release and its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 salon \
    && useradd --system --uid 10001 --gid salon --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin salon

# ---- build: the project's wheel and its dependencies in a virtualenv
FROM base AS build
ARG VENV=/opt/salon-sessions
ARG SRC=/src
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR ${SRC}
COPY pyproject.toml README.md ./
COPY salon_sessions ./salon_sessions
# neonize's Go core (whatsmeow) ships inside the neonize wheel as a shared library: the
# last two commands fail the build when it is missing (neonize would try to download it at
# run time) or does not load, or when the entry point does not start
RUN python -m venv "${VENV}" \
    && "${VENV}/bin/pip" install --upgrade "pip>=24" "setuptools>=77" wheel \
    && "${VENV}/bin/pip" wheel --no-deps --wheel-dir "${SRC}/dist" . \
    && "${VENV}/bin/pip" install "${SRC}"/dist/salon_sessions-*.whl \
    && "${VENV}/bin/python" -c "import glob, importlib.util, sys; spec = importlib.util.find_spec('neonize'); found = glob.glob(spec.submodule_search_locations[0] + '/neonize-*.so'); print('neonize core:', found); sys.exit(0 if found else 1)" \
    && "${VENV}/bin/python" -c "import neonize._binder as b; print('goneonize', b.gocode.GetVersion().decode())" \
    && "${VENV}/bin/salon-sessions" --help > /dev/null

# ---- runtime: the virtualenv, owned by root and read-only for the unprivileged user
FROM base AS runtime
ARG VENV=/opt/salon-sessions
COPY --from=build ${VENV} ${VENV}
ENV PATH="${VENV}/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SALON_LOG_JSON=true
# the pods run with readOnlyRootFilesystem and an emptyDir on /tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["salon-sessions"]
CMD ["--help"]
