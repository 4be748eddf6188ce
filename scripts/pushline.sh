#!/usr/bin/env bash
# Entry point behind the npm scripts: runs every command under Node 24 with dependencies
# installed, so `npm start` and `npm test` work on a fresh clone with an older system node.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
pushline_ensure_node
pushline_ensure_deps
cd "$PUSHLINE_ROOT"

cmd="${1:-}"; shift || true
case "$cmd" in
  start) exec node scripts/start.ts "$@" ;;
  test)
    node scripts/fetch-kafka.ts
    node_modules/.bin/tsc -p tsconfig.json
    node_modules/.bin/tsc -p services/console/ui/tsconfig.json
    # kafkajs 2.2.4 trips Node 24's TimeoutNegativeWarning (kafkajs#1751). createKafkaClient removes
    # the cause (decision 0026); raw kafkajs clients in tests can still print it.
    exec node --disable-warning=TimeoutNegativeWarning --test --test-global-setup=test/global-setup.ts --test-concurrency=1 \
      --test-timeout=120000 "$@" 'libs/*/test/**/*.test.ts' 'services/*/test/**/*.test.ts' 'test/**/*.test.ts' ;;
  typecheck)
    node_modules/.bin/tsc -p tsconfig.json
    exec node_modules/.bin/tsc -p services/console/ui/tsconfig.json ;;
  lint)
    node_modules/.bin/eslint --max-warnings=0 .
    node_modules/.bin/knip --no-progress
    exec node_modules/.bin/prettier --check --log-level=warn . ;;
  format) exec node_modules/.bin/prettier --write --log-level=warn . ;;
  token) exec node scripts/token.ts "$@" ;;
  device) exec node scripts/device.ts "$@" ;;
  bench) exec node bench/src/main.ts "$@" ;;
  chaos) exec node --disable-warning=TimeoutNegativeWarning bench/src/chaos/main.ts "$@" ;;
  *) echo "usage: scripts/pushline.sh start|test|typecheck|lint|format|token|device|bench|chaos" >&2; exit 2 ;;
esac
