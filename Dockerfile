# syntax=docker/dockerfile:1
# The fedrelay image: every process the Helm chart runs (`fedrelay relayer run ...`,
# `fedrelay coordinator run`, `fedrelay db upgrade`) from one entry point.
#
#   docker build -t fedrelay:0.1.0 .                                          # extra: relayer
#   docker build --build-arg FEDRELAY_EXTRAS=relayer,coordinator -t fedrelay:0.1.0 .  # + PyTorch
#   docker build --build-arg FEDRELAY_EXTRAS=worker -t fedrelay-worker:0.1.0 .   # with PyTorch
#
# Stages: `contracts` compiles the Solidity ABIs the EVM adapters read (forge over solcjs, as in
# development); `build` installs the pinned dependencies and fedrelay into a virtualenv;
# the final stage carries only that virtualenv, the ABIs and the migrations, and runs as an
# unprivileged user on a read-only root (writable: /tmp and the data volume /var/lib/fedrelay).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG NODE_IMAGE=node:20.19.5-bookworm-slim

# --- contract ABIs -------------------------------------------------------------------------------
# ABIs are the same on every platform; Foundry's npm packages ship linux-amd64 binaries only.
FROM --platform=linux/amd64 ${NODE_IMAGE} AS contracts
WORKDIR /build
COPY tools/npm/package.json tools/npm/package-lock.json tools/npm/
RUN cd tools/npm && npm ci --no-audit --no-fund --loglevel=error
COPY tools/solc/ tools/solc/
COPY contracts/foundry.toml contracts/
COPY contracts/src/ contracts/src/
RUN cd contracts \
    && ../tools/npm/node_modules/@foundry-rs/forge-linux-amd64/bin/forge build \
        --offline --use ../tools/solc/solc-forge.cjs --skip test --skip script \
    && for name in MessageCore JobMarket ProposalChecker WorkerHub RewardDistributor; do \
        test -s "out/${name}.sol/${name}.json" || { echo "missing ABI of ${name}" >&2; exit 1; }; \
    done

# --- Python dependencies and fedrelay ------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG FEDRELAY_EXTRAS="relayer"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compilers only here, for any dependency without a wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/fedrelay/venv
ENV PATH=/opt/fedrelay/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
# requirements.lock pins every package of the development environment (test tools and PyTorch
# included); the image installs the runtime requirements of pyproject.toml (plus the extras
# named in FEDRELAY_EXTRAS, and the extras those name as fedrelay[...]) at exactly the versions
# the lock pins. The relayer's extra holds the coordinator's API and store packages too; the
# coordinator's extra adds PyTorch for replaying challenged segments.
RUN python - <<'PY' > /tmp/runtime.txt
import os, re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = list(project["dependencies"])
extras = [e.strip() for e in os.environ.get("FEDRELAY_EXTRAS", "").split(",") if e.strip()]
seen = set()
while extras:
    extra = extras.pop()
    if extra in seen:
        continue
    seen.add(extra)
    for requirement in project["optional-dependencies"][extra]:
        own = re.fullmatch(r"fedrelay\[([^]]+)\]", requirement)
        if own:
            extras += [e.strip() for e in own.group(1).split(",")]
        elif requirement not in wanted:
            wanted.append(requirement)
print("\n".join(wanted))
PY
RUN pip install "pip==25.3" \
    && pip install --constraint requirements.lock --requirement /tmp/runtime.txt
COPY adapters/ adapters/
COPY coordinator/ coordinator/
COPY fedrelay/ fedrelay/
COPY relayer/ relayer/
COPY worker/ worker/
RUN pip install --no-deps . \
    && pip check \
    && fedrelay --help >/dev/null
# The ledger finds its Alembic scripts next to the installed packages (see
# adapters/ledger/database.py: MIGRATIONS_DIR); put them there.
COPY migrations/ /tmp/migrations/
RUN site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
    && cp -r /tmp/migrations "${site}/migrations" \
    && find /opt/fedrelay/venv -name '__pycache__' -prune -exec rm -rf {} + \
    && python -m compileall -q /opt/fedrelay/venv "${site}/migrations"

# --- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="fedrelay" \
      org.opencontainers.image.description="fedrelay relayer stages and coordinator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/fedrelay/fedrelay"
ARG UID=10001
ARG GID=10001
RUN groupadd --system --gid "${GID}" fedrelay \
    && useradd --system --uid "${UID}" --gid "${GID}" --no-create-home \
        --home-dir /var/lib/fedrelay --shell /usr/sbin/nologin fedrelay \
    && install -d -o "${UID}" -g "${GID}" -m 0750 /var/lib/fedrelay
COPY --from=build /opt/fedrelay/venv /opt/fedrelay/venv
COPY --from=contracts /build/contracts/out /opt/fedrelay/contracts/out
ENV PATH=/opt/fedrelay/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FEDRELAY_CONTRACTS_OUT=/opt/fedrelay/contracts/out \
    FEDRELAY_HEALTH_PORT=8080 \
    TMPDIR=/tmp
WORKDIR /var/lib/fedrelay
VOLUME ["/var/lib/fedrelay"]
USER ${UID}:${GID}
EXPOSE 8080 8000
ENTRYPOINT ["fedrelay"]
CMD ["--help"]
