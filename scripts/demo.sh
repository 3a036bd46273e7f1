#!/usr/bin/env bash
# demo.sh: install everything (scripts/setup.sh), then show ARCH's main job end to end on
# a private containerd that the demo starts and stops (scripts/demo.py tells the story).
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
"$repo/scripts/setup.sh"
exec /usr/bin/python3 "$repo/scripts/demo.py" "$@"
