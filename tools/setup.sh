#!/usr/bin/env bash
# Installs everything fedrelay needs, pinned, idempotently. Called by `make setup`.
#
# Phases (each skipped when its inputs are unchanged since the last successful run):
#   debian  clang-14/llvm-14 (Solana program), postgresql (ledger tests), from Debian
#   python  .venv with the pinned Python dependencies (requirements.lock) and fedrelay itself
#   npm     Foundry (anvil, forge), solcjs, Wormhole's TypeScript SDK from tools/npm's lockfile,
#           and Wormhole's Ethereum core bytecode (tools/npm/wormhole-core.json)
#   kafka   the Apache Kafka broker's jars from Maven Central through tools/kafka/pom.xml
#   helm    helm built by `go install` at a pinned version into tools/bin, with the version
#           information helm's own release build stamps in (so it knows its Kubernetes version)
#   weed    SeaweedFS's `weed` (the S3-compatible server of the blob-store tests) built from the Go
#           module proxy at a pinned version into tools/bin
#   flower  Flower (flwr) in its own site directory, tools/flower-site, for `fedrelay bench flower`
#           (its pins conflict with the project's, so it is kept out of .venv)
# Prints how long each phase took. `tools/setup.sh PHASE...` runs only the phases named.
# FEDRELAY_TOOLS_BIN puts helm and weed elsewhere than tools/bin (to try a build before using it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STAMPS="$ROOT/.setup-stamps"
mkdir -p "$STAMPS"

PYTHON=${PYTHON:-python3.11}
HELM_VERSION=v3.19.0
# The commit of helm's v3.19.0 tag, as its release binaries report it (`helm version`).
HELM_GIT_COMMIT=3d8990f0836691f0229297773f3524598f46bda6
# SeaweedFS publishes no tagged module versions; this pseudo-version is the pinned commit.
WEED_MODULE=github.com/seaweedfs/seaweedfs
WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6
TOOLS_BIN=${FEDRELAY_TOOLS_BIN:-$ROOT/tools/bin}
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
  h=$(inputs_hash tools/npm/package.json tools/npm/package-lock.json tools/npm/wormhole-core.json)
  if [ -d tools/npm/node_modules ] && [ -d tools/npm/wormhole-core ] && fresh npm "$h"; then
    echo "    up to date"; return
  fi
  (cd tools/npm && npm ci --no-audit --no-fund --loglevel=error)
  wormhole_core
  stamp npm "$h"
}

# Wormhole's Ethereum core bytecode (tools/npm/wormhole-core.json says what and why): the package
# tarball alone, its sha512 checked against the pinned registry integrity, three files kept.
wormhole_core() {
  local spec integrity tarball got dir=tools/npm/wormhole-core
  spec=$(.venv/bin/python -c 'import json; d = json.load(open("tools/npm/wormhole-core.json")); print(d["package"] + "@" + d["version"])')
  integrity=$(.venv/bin/python -c 'import json; print(json.load(open("tools/npm/wormhole-core.json"))["integrity"])')
  rm -rf "$dir" && mkdir -p "$dir"
  tarball=$(cd "$dir" && npm pack --silent --loglevel=error "$spec")
  got=$(.venv/bin/python -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$dir/$tarball")
  if [ "$got" != "$integrity" ]; then
    echo "setup: $spec tarball integrity $got, expected $integrity" >&2; rm -rf "$dir"; exit 1
  fi
  .venv/bin/python -c 'import json, sys; print("\n".join(json.load(open("tools/npm/wormhole-core.json"))["files"]))' \
    | xargs tar -xzf "$dir/$tarball" -C "$dir"
  rm -f "$dir/$tarball"
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

# The directory of a module's source in the Go module cache (downloaded if needed).
module_dir() {
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

helm_tool() {
  # helm's Makefile stamps its version, commit and tree state, and the Kubernetes version it
  # assumes without a cluster (the minor of its k8s.io/client-go, the major + 1), into
  # internal/version, pkg/lint/rules and pkg/chartutil. Without them `helm template` renders for
  # Kubernetes v1.20 and `helm lint` takes newer API versions for removed ones.
  local k8s major minor pkg=helm.sh/helm/v3 flags
  k8s=$(cd "$(module_dir "$pkg@$HELM_VERSION")" && go list -m -f '{{.Version}}' k8s.io/client-go)
  k8s=${k8s#v}
  major=$(( ${k8s%%.*} + 1 ))
  minor=$(echo "$k8s" | cut -d. -f2)
  flags="-w -s -X $pkg/internal/version.version=$HELM_VERSION"
  flags+=" -X $pkg/internal/version.gitCommit=$HELM_GIT_COMMIT"
  flags+=" -X $pkg/internal/version.gitTreeState=clean"
  flags+=" -X $pkg/pkg/lint/rules.k8sVersionMajor=$major -X $pkg/pkg/lint/rules.k8sVersionMinor=$minor"
  flags+=" -X $pkg/pkg/chartutil.k8sVersionMajor=$major -X $pkg/pkg/chartutil.k8sVersionMinor=$minor"
  # A -trimpath build keeps no -ldflags in its build information: the stamp holds their hash,
  # and the binary must report the pinned version and commit.
  local h
  h=$(echo "$flags" | sha256sum | cut -d' ' -f1)
  if [ -x "$TOOLS_BIN/helm" ] && fresh helm "$h" \
      && [ "$("$TOOLS_BIN/helm" version --template '{{.Version}} {{.GitCommit}}')" \
           = "$HELM_VERSION $HELM_GIT_COMMIT" ]; then
    echo "    up to date"; return
  fi
  mkdir -p "$TOOLS_BIN"
  GOBIN="$TOOLS_BIN" go install -trimpath -ldflags "$flags" "$pkg/cmd/helm@$HELM_VERSION"
  "$TOOLS_BIN/helm" version
  stamp helm "$h"
}

weed_tool() {
  if [ -x "$TOOLS_BIN/weed" ] && fresh weed "$WEED_VERSION"; then echo "    up to date"; return; fi
  # `go install $WEED_MODULE/weed@$WEED_VERSION` is refused: the module's go.mod has a replace
  # directive, which only a main module may have. So build it as the main module, from its own
  # source and go.sum in the module cache (the flags of its Makefile).
  local dir
  dir=$(module_dir "$WEED_MODULE@$WEED_VERSION")
  mkdir -p "$TOOLS_BIN"
  (cd "$dir" && go build -ldflags "-s -w" -o "$TOOLS_BIN/weed" ./weed)
  "$TOOLS_BIN/weed" version
  stamp weed "$WEED_VERSION"
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

declare -A PHASES=(
  [debian]=debian [python]=python_env [npm]=npm_tools [kafka]=kafka_broker [helm]=helm_tool
  [weed]=weed_tool [flower]=flower_site
)
ORDER=(debian python npm kafka helm weed flower)
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${ORDER[@]}")
for name in "${selected[@]}"; do
  [ -n "${PHASES[$name]:-}" ] || { echo "setup: no phase '$name' (phases: ${ORDER[*]})" >&2; exit 2; }
done

total_start=$(date +%s.%N)
for name in "${ORDER[@]}"; do
  for wanted in "${selected[@]}"; do
    [ "$name" = "$wanted" ] && phase "$name" "${PHASES[$name]}"
  done
done
echo "==> setup timings"
for t in "${TIMINGS[@]}"; do echo "    $t"; done
awk -v a="$total_start" -v b="$(date +%s.%N)" 'BEGIN { printf "    %-7s %6.1fs\n", "total", b - a }'
