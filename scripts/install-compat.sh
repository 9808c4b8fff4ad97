#!/usr/bin/env bash
# Install the OFFICIAL iii SDKs used by the compat tests into .compat/ (git-ignored).
#
#   scripts/install-compat.sh                 # all four
#   scripts/install-compat.sh node-0.9 py-0.25.0   # a subset
#
# Targets (sources of truth live in tests/compat/):
#   .compat/node-0.9/   iii-sdk@0.9.0  + tsx   (tests/compat/node-0.9/{package.json,package-lock.json,sdk.mjs})
#   .compat/node-0.22/  iii-sdk@0.22.1 + @iii-dev/helpers@0.22.1 + tsx (tests/compat/node-0.22/...)
#   .compat/py-0.11.6/  venv with iii-sdk==0.11.6 (tests/compat/python/requirements-0.11.6.txt)
#   .compat/py-0.25.0/  venv with iii-sdk==0.25.0 (tests/compat/python/requirements-0.25.0.txt)
#   .compat/py-motia/   venv with motia==1.0.4rc1 + iii-sdk==0.11.3 (tests/compat/python/requirements-motia.txt)
#   .compat/bench-arq/  venv with arq==0.28.0 for the queue benchmark's baseline (benchmarks/requirements-arq.txt;
#                       not part of the default set: `make bench` installs it)
#
# Idempotent and fast: a target whose inputs (lockfile / requirements hash) are unchanged
# is skipped; sdk.mjs adapters are always re-copied (cheap). Needs: node >= 20, npm,
# python3.11 with the venv module (Debian: apt-get install python3.11-venv).
# Env: PYTHON (default python3.11), III_COMPAT_DIR (default <repo>/.compat).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/tests/compat"
DEST="${III_COMPAT_DIR:-$ROOT/.compat}"
PYTHON="${PYTHON:-python3.11}"
ALL=(node-0.9 node-0.22 py-0.11.6 py-0.25.0 py-motia browser)

die() { echo "install-compat: $*" >&2; exit 1; }
say() { echo "install-compat: $*"; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

need_node() {
  command -v node >/dev/null || die "node not found (need Node 20+)"
  command -v npm >/dev/null || die "npm not found"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  (( major >= 20 )) || die "node $(node --version) is too old (need 20+)"
}

install_node() {  # $1 = node-0.9 | node-0.22
  local name="$1" src="$SRC/$1" dst="$DEST/$1" want
  [[ -f "$src/package-lock.json" ]] || die "missing $src/package-lock.json"
  need_node
  mkdir -p "$dst"
  cp "$src/package.json" "$src/package-lock.json" "$src/sdk.mjs" "$dst/"
  want="$(digest "$src/package.json" "$src/package-lock.json")"
  if [[ -d "$dst/node_modules/iii-sdk" && "$(cat "$dst/.installed" 2>/dev/null)" == "$want" ]]; then
    say "$name up to date"
    return
  fi
  say "$name: npm ci"
  rm -f "$dst/.installed"
  (cd "$dst" && npm ci --no-audit --no-fund --loglevel=error)
  (cd "$dst" && node --input-type=module -e "await import('./sdk.mjs')") \
    || die "$name: installed, but sdk.mjs does not load"
  echo "$want" > "$dst/.installed"
  say "$name installed"
}

# A venv at $2 with the requirements $3 (recreated only when they change); then Python
# code $4 must run in it, else the install fails with "$1: $5".
install_venv() {  # $1 = name, $2 = venv dir, $3 = requirements file, $4 = check, $5 = what failed
  local name="$1" dst="$2" req="$3" want
  want="$(digest "$req")"
  if [[ -x "$dst/bin/python" && "$(cat "$dst/.installed" 2>/dev/null)" == "$want" ]]; then
    say "$name up to date"
    return
  fi
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=...)"
  say "$name: creating venv with $PYTHON"
  rm -rf "$dst"
  "$PYTHON" -m venv "$dst" || die "venv failed (Debian: apt-get install python3.11-venv)"
  "$dst/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  "$dst/bin/python" -c "$4" || die "$name: $5"
  echo "$want" > "$dst/.installed"
  say "$name installed"
}

install_py() {  # $1 = py-0.11.6 | py-0.25.0 | py-motia
  local name="$1" ver="${1#py-}" req sdk
  sdk="$ver"
  [[ "$ver" == motia ]] && sdk=0.11.3  # Motia 1.0.4rc1 is built on iii-sdk 0.11.3
  req="$SRC/python/requirements-$ver.txt"
  [[ -f "$req" ]] || die "missing $req"
  install_venv "$name" "$DEST/$1" "$req" \
    "import importlib.metadata as md, iii; v = md.version('iii-sdk'); assert v == '$sdk', v" \
    "iii-sdk import/version check failed"
}

install_arq() {  # the queue benchmark's baseline (arq needs redis-py < 6, so not in the project venv)
  install_venv bench-arq "$DEST/bench-arq" "$ROOT/benchmarks/requirements-arq.txt" "import arq" \
    "arq does not import"
}

install_browser() {  # Debian's chromium + Playwright for Python in their own venv (browser tests)
  if [[ ! -x /usr/bin/chromium ]]; then
    say "browser: installing Debian's chromium (apt-get)"
    # Try the package lists as they are first; on a fresh machine they may be empty.
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
             --no-install-recommends chromium >/dev/null; }; } \
      || die "browser: apt-get install chromium failed (run it as root)"
  fi
  install_venv browser "$DEST/browser" "$SRC/browser/requirements.txt" "import playwright.async_api" \
    "playwright does not import"
}
targets=("$@")
(( ${#targets[@]} )) || targets=("${ALL[@]}")
mkdir -p "$DEST"
for t in "${targets[@]}"; do
  case "$t" in
    node-0.9|node-0.22) install_node "$t" ;;
    py-0.11.6|py-0.25.0|py-motia) install_py "$t" ;;
    bench-arq) install_arq ;;
    browser) install_browser ;;
    *) die "unknown target '$t' (expected one of: ${ALL[*]} bench-arq browser)" ;;
  esac
done
