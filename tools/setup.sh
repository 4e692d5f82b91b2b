#!/usr/bin/env bash
# Installs everything fedrelay needs, pinned, idempotently. Called by `make setup`.
#
# Phases (each skipped when its inputs are unchanged since the last successful run):
#   debian  clang-14/llvm-14 (Solana program), postgresql (ledger tests), from Debian
#   python  .venv with the pinned Python dependencies (requirements.lock) and fedrelay itself
#   npm     Foundry (anvil, forge), solcjs, Wormhole's TypeScript SDK from tools/npm's lockfile
#   kafka   the Apache Kafka broker's jars from Maven Central through tools/kafka/pom.xml
#   helm    helm built by `go install` at a pinned version into tools/bin
#   flower  Flower (flwr) in its own site directory, tools/flower-site, for `fedrelay bench flower`
#           (its pins conflict with the project's, so it is kept out of .venv)
# Prints how long each phase took.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STAMPS="$ROOT/.setup-stamps"
mkdir -p "$STAMPS"

PYTHON=${PYTHON:-python3.11}
HELM_VERSION=v3.19.0
DEBIAN_PACKAGES=(clang-14 llvm-14 postgresql util-linux)
PIP_VERSION=25.3

declare -a TIMINGS=()
phase() {  # phase NAME FUNCTION
  local name=$1 fn=$2 start end
  start=$(date +%s.%N)
  echo "==> setup: $name"
  "$fn"
  end=$(date +%s.%N)
  TIMINGS+=("$(awk -v n="$name" -v a="$start" -v b="$end" 'BEGIN { printf "%-7s %6.1fs", n, b - a }')")
}

# A stamp holds the hash of a phase's inputs; the phase runs again only when they change.
inputs_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp() { echo "$2" > "$STAMPS/$1"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

debian() {
  local missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then echo "    up to date"; return; fi
  echo "    installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_env() {
  local h
  h=$(inputs_hash pyproject.toml requirements.lock)
  if [ -x .venv/bin/python ] && fresh python "$h"; then echo "    up to date"; return; fi
  if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
  .venv/bin/python -m pip install -q --disable-pip-version-check "pip==$PIP_VERSION"
  # requirements.lock pins every transitive dependency; pyproject.toml pins the direct ones.
  .venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
  stamp python "$h"
}

npm_tools() {
  local h
  h=$(inputs_hash tools/npm/package.json tools/npm/package-lock.json)
  if [ -d tools/npm/node_modules ] && fresh npm "$h"; then echo "    up to date"; return; fi
  (cd tools/npm && npm ci --no-audit --no-fund --loglevel=error)
  stamp npm "$h"
}

kafka_broker() {
  local h
  h=$(inputs_hash tools/kafka/pom.xml)
  if compgen -G "tools/kafka/libs/kafka_2.13-*.jar" >/dev/null && fresh kafka "$h"; then
    echo "    up to date"; return
  fi
  rm -rf tools/kafka/libs
  (cd tools/kafka && mvn -B -q dependency:copy-dependencies -DoutputDirectory=libs -DincludeScope=runtime)
  stamp kafka "$h"
}

helm_tool() {
  # `go version -m` reads the module version the binary was built from.
  if [ -x tools/bin/helm ] && go version -m tools/bin/helm 2>/dev/null | grep -qE "^\s+mod\s+helm.sh/helm/v3\s+$HELM_VERSION\s"; then
    echo "    up to date"; return
  fi
  mkdir -p tools/bin
  GOBIN="$ROOT/tools/bin" go install \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

flower_site() {
  local h
  h=$(inputs_hash tools/flower/requirements.lock)
  if [ -d tools/flower-site ] && fresh flower "$h"; then echo "    up to date"; return; fi
  rm -rf tools/flower-site
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    --target tools/flower-site -r tools/flower/requirements.lock
  stamp flower "$h"
}

total_start=$(date +%s.%N)
phase debian debian
phase python python_env
phase npm npm_tools
phase kafka kafka_broker
phase helm helm_tool
phase flower flower_site
echo "==> setup timings"
for t in "${TIMINGS[@]}"; do echo "    $t"; done
awk -v a="$total_start" -v b="$(date +%s.%N)" 'BEGIN { printf "    %-7s %6.1fs\n", "total", b - a }'
